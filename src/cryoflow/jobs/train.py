"""The train rule: neural posterior estimation on images simulated on the fly, on one rank or many
(``cryoflow.sbi.trainjob``, which torchrun's ranks also run)."""

from __future__ import annotations

from cryoflow.job import Job
from cryoflow.sbi import trainjob


def run(job: Job) -> None:
    job.start_log()
    trainjob.run(trainjob.TrainJob.from_job(job))
