"""The demo_particles rule: a synthetic RELION 3.1 dataset with known θ, simulated from the model's templates."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from cryoflow.demo import dataset
from cryoflow.job import Job
from cryoflow.workflow import from_config


def run(job: Job) -> None:
    log = job.start_log()
    cfg = job.params.demo
    config = {"image": job.params.image, "simulator": job.params.simulator}
    torch.set_num_threads(job.threads)
    simulator = from_config.demo_simulator(job.input.ensemble, config, cfg)
    project = Path(job.output.star).parents[2]  # …/demo: the RELION project folder
    try:
        star = dataset.make_dataset(
            simulator,
            project,
            cfg["n_particles"],
            cfg["populations"],
            tuple(cfg["snr_range"]),
            cfg["noise_colour_strength"],
            cfg["noise_corner_A"],
            cfg["particles_per_stack"],
            seed=job.params.seed + 1,
        )
    except BaseException:
        shutil.rmtree(job.output.stacks, ignore_errors=True)
        raise
    log.info("wrote %s with %d particles", star, cfg["n_particles"])
