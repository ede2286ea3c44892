"""Figures for the HTML report (matplotlib).

- ``figures``: ``plot_loss``, ``plot_ensemble``, ``plot_calibration``, ``plot_posteriors``, ``plot_latents``,
  ``plot_whitening_mmd``, ``plot_populations``, ``plot_examples``
- ``micrograph_report``: ``plot_micrograph``, ``truth_comparison``, ``load_maps``
"""
