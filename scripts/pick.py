"""Rule pick: one shard of a micrograph set, window by window: posterior maps, candidates, example windows."""

from cryoflow.job import Job
from cryoflow.jobs import pick

pick.run(Job.from_snakemake(snakemake))
