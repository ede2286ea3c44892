"""Rule whitening_check: latents of one random subset of particles, whitened and not, for the report's MMD."""

from cryoflow.job import Job
from cryoflow.jobs import whitening_check

whitening_check.run(Job.from_snakemake(snakemake))
