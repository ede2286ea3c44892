"""Numbers computed from posteriors.

- ``diagnostics``: ``mmd_test``, ``validation_summary``, ``summarize`` (a dataset's report numbers),
  ``likelihood_comparison``, ``likelihood_agreement``, ``sbc_pit``, ``accuracy``
- ``populations``: ``estimate`` (p(θ) with a bootstrap band), ``modes`` (states), ``mass_inside``
- ``predictive``: ``check`` (the posterior-predictive check, a ``PredictiveResult``), ``PredictiveSimulator``,
  ``LatentReference``
- ``picking``: ``evaluate_micrograph`` (posterior maps of a micrograph), ``micrograph_ctf``, ``example_windows``
- ``candidates``: ``local_maxima``, ``window_score``, ``candidate_rows``, ``write_coordinates``
- ``pick_job``: ``pick_shard`` (one pick job's micrographs), ``Picker``
"""
