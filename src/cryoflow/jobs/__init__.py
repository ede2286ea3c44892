"""The workflow's rules as package functions: ``cryoflow.jobs.<rule>.run(job)`` does what rule <rule> does.

Each rule script is ``<rule>.run(Job.from_snakemake(snakemake))``; the same
call runs a stage from Python on plain paths and settings
(``cryoflow.job.Job.of``). One module per rule, so that a rule's conda env
needs only what its own stage imports.
"""
