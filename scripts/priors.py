"""Rule priors: the simulator's prior ranges, from the config, a dataset's STAR file, or a trained model's card."""

from cryoflow.job import Job
from cryoflow.jobs import priors

priors.run(Job.from_snakemake(snakemake))
