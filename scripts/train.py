"""Rule train: neural posterior estimation on images simulated on the fly, on one rank or many."""

from cryoflow.job import Job
from cryoflow.jobs import train

train.run(Job.from_snakemake(snakemake))
