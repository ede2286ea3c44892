"""The image model: θ conventions, CTF, projections, maps, the simulator, junk images, particle preprocessing."""
