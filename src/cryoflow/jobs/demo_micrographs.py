"""The demo_micrographs rule: synthetic micrographs with known particles, written like a RELION CTF job."""

from __future__ import annotations

import shutil

import torch

from cryoflow.demo import micrograph_set
from cryoflow.job import Job
from cryoflow.workflow import from_config


def run(job: Job) -> None:
    log = job.start_log()
    cfg = job.params.demo
    image = job.params.image
    config = {"image": image, "simulator": job.params.simulator}
    torch.set_num_threads(job.threads)
    simulator = from_config.demo_simulator(job.input.ensemble, config, cfg)
    project = job.output.star.rsplit("/CtfFind/", 1)[0]  # …/demo: the RELION project folder
    try:
        star = micrograph_set.make_micrographs(
            simulator, project, cfg, window_A=image["box_px"] * image["pixel_size_A"], seed=job.params.seed + 3
        )
    except BaseException:
        shutil.rmtree(job.output.micrographs, ignore_errors=True)
        raise
    log.info("wrote %s with %d micrographs", star, cfg["n_micrographs"])
