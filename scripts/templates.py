"""Rule templates: normal-mode ensemble ordered by θ (Å); PDBs, a θ table and ensemble.npz."""

from cryoflow.job import Job
from cryoflow.jobs import templates

templates.run(Job.from_snakemake(snakemake))
