"""Rule predictive_check: one dataset's particles against simulations at their own posterior θ and CTF."""

from cryoflow.job import Job
from cryoflow.jobs import predictive_check

predictive_check.run(Job.from_snakemake(snakemake))
