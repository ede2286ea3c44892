"""The gather_posteriors rule: join the per-shard STAR files and npz archives, one shard in memory at a time."""

from __future__ import annotations

from cryoflow.io.star import concatenate_star
from cryoflow.job import Job
from cryoflow.sbi import inference


def run(job: Job) -> None:
    log = job.start_log()
    concatenate_star(job.input.stars, job.output.star)
    n = inference.concatenate_npz(job.input.npzs, job.output.npz)
    log.info("gathered %d shards: %d particles", len(job.input.npzs), n)
