"""The workflow's side.

- ``configuration``: ``load`` (the config checks run when the DAG is built), ``train_params``,
  ``dataset_settings``, ``micrograph_settings``
- ``schema``: ``validate`` (the JSON schema, the only home of defaults), ``full_schema``
- ``modelcard``: ``ModelCard``, ``template_recipe``, ``check_trained_model``; ``gridcheck``: grid checks
- ``from_config`` (needs torch): package objects built from config sections: ``load_simulator``,
  ``build_simulator``, ``build_model``, ``training_config``, ``resolve_priors``

All but ``from_config`` use the standard library, PyYAML and jsonschema only.
"""
