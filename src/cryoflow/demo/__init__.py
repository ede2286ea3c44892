"""Synthetic data with a known truth, written as RELION projects.

- ``dataset``: ``make_dataset`` (particles with known θ), ``sample_mixture``, ``coloured_noise``
- ``micrograph_set``: ``make_micrographs`` (micrographs with known particles and junk)
"""
