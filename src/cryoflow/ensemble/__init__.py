"""Conformational ensembles ordered along θ.

- ``templates``: ``normal_mode_ensemble``, ``normal_mode_grid`` (ANM), ``user_ensemble`` and ``load_frames``
  (the user's frames), ``selection_distance``, ``rmsd_matrix``, ``Ensemble``
- ``md``: ``run`` (PDBFixer and OpenMM), ``MDSettings``
"""
