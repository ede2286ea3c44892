"""The image model and bringing particles onto its grid.

- ``theta``: θ conventions (``bounds``, ``range_of``, ``columns``, ``true_theta``)
- ``ctf``: ``CTF`` (one CTF's parameters), ``ctf``, ``per_image_ctf``, ``first_zero_frequency``
- ``projection``: ``AtomTemplates``, ``VolumeTemplates``; ``rasterize``: ``rasterize_gaussians``, ``write_mrc``
- ``so3``: ``so3_cells``, ``euler_matrices``, ``children``
- ``simulator``: ``Simulator``, ``Priors``, ``noise_filter``, ``add_noise``, ``normalize``
- ``junk``: ``junk_images``, ``junk_batch_size``
- ``preprocess``: ``preprocess`` (a shard onto the training grid), ``estimate_noise_spectra``,
  ``training_grid_images``; ``whitening``: ``whiten``, ``radial_power``, ``noise_mask_radius_A``
- ``boxsize`` (standard library): ``resampled_box_px``
"""
