"""Rule gather_posteriors: join the per-shard STAR files and npz archives, one shard in memory at a time."""

from cryoflow.job import Job
from cryoflow.jobs import gather_posteriors

gather_posteriors.run(Job.from_snakemake(snakemake))
