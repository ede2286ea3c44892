"""The explicit (BioEM-style) likelihood: the exact posterior over templates that an image allows, and its
comparison with the estimator's.

- ``exact``: ``ExplicitLikelihood`` (log p(image | template) summed over poses, shifts and nuisances),
  ``GridSettings``, ``log_evidence`` (the closed-form integral over normalization, offset and noise)
- ``rows``: the shift × nuisance cells an image sums over (``Rows``, ``NuisanceCell``) and their refinement
- ``gridsize`` (standard library): ``estimated_bytes``, ``likelihood_problems`` (checks at ``-n``)
- ``comparison``: ``validation_reference``, ``dataset_reference``, ``posterior_on_grid``, ``kl_divergence``
- ``yardstick``: ``make_reference``, ``load``, ``check``, ``score`` (a fixed reference set any estimator is scored
  on, ``bench/yardstick.py``) and ``theta_convergence``
"""
