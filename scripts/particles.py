"""Rule particles: one shard of the particles on the training grid (resampled, whitened, normalized)."""

from cryoflow.job import Job
from cryoflow.jobs import particles

particles.run(Job.from_snakemake(snakemake))
