"""Rule populations: p(θ) across one dataset's particles from their posteriors, and per-state STAR files."""

from cryoflow.job import Job
from cryoflow.jobs import populations

populations.run(Job.from_snakemake(snakemake))
