"""File formats and the readers built on them.

- ``star``: ``read_star``, ``write_star``, ``concatenate_star``, ``star_version``
- ``starindex`` (standard library, for the DAG): ``index_star``, ``index_cs``, ``shard_rows``, ``sample_rows``,
  ``index_micrographs``; ``mrcheader`` (standard library): ``mrc_header``, ``mrc_truncation``
- ``particles``: ``load_particles``, ``particle_table``, ``open_dataset`` (a lazy ``ParticleSource``),
  ``star_ctf``, ``ctf_priors``
- ``cryosparc``: ``read_cryosparc``; ``cryosparc_results``: ``write_results``, ``write_result_group``
- ``mrcstack``: ``read_stack_header``, ``iter_stack``, ``gathered_images``
- ``micrographs``: ``from_star``, ``from_files``, ``open_set``, ``check``, ``read``
- ``structure``: ``load_structure``, ``fetch_structure``, ``select_atoms``, ``bead_weights``, ``write_pdb``;
  ``structure_text`` (standard library): ``is_pdb_id``, ``ca_positions``
- ``fileio`` (standard library): ``atomic_path``, ``read_json``, ``write_json``, ``write_npz``, ``write_tsv``,
  ``sha256_files``; ``npz``: ``NpzWriter`` (streamed archives)
"""
