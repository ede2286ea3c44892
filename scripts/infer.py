"""Rule infer: per-particle posterior summaries and latents of one shard; STAR columns + npz, streamed."""

from cryoflow.job import Job
from cryoflow.jobs import infer

infer.run(Job.from_snakemake(snakemake))
