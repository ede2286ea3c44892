"""The neural posterior estimator: its network, training on one rank or many, and amortized inference.

- ``models``: ``PosteriorEstimator``, ``save_model``, ``load_model``, ``check_ctf_in_prior``
- ``training``: ``train`` (a ``TrainingLoop`` around a ``TrainingState``), ``TrainingConfig``, ``Objective``
- ``distributed``: ``World``, ``run_ranks``, ``launch_command``, ``SyncedBatchNorm2d``
- ``trainjob``: ``run`` (the train rule's job), ``layout``, ``model_card``
- ``inference``: ``posterior_stream``, ``posterior_batches``, ``latents``, ``star_columns``, ``concatenate_npz``
- ``validation``: ``validation_arrays`` (the held-out sets); ``heldout``: ``calibration_set``, ``fixed_snr_set``
- ``devices``: ``select_device``, ``device_name``

The explicit likelihood the estimator is measured against is ``cryoflow.likelihood``.
"""
