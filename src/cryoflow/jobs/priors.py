"""The priors rule: the simulator's prior ranges, from the config, a dataset's STAR file, or a trained model's card."""

from __future__ import annotations

import numpy as np

from cryoflow.io import particles
from cryoflow.io.fileio import read_json, write_json
from cryoflow.job import Job
from cryoflow.physics import theta
from cryoflow.workflow import from_config


def run(job: Job) -> None:
    log = job.start_log()
    simulator = job.params.simulator
    theta_A = np.load(job.input.ensemble)["theta_A"]
    if "card" in job.input.keys():  # a model trained elsewhere: the priors it was trained with
        priors = read_json(job.input.card)["priors"]
        log.info("priors of the trained model %s", job.input.card)
    else:
        found = None
        if "star" in job.input.keys():
            star = job.input.star
            table = particles.particle_table(star, pixel_size_A=job.params.pixel_size_A)
            found = particles.ctf_priors(table, star)
            for key, value in found.items():
                log.info("%s: %s = %s", star, key, value)
            log.info("particles are resampled to the training pixel size %.4g Å", job.params.image["pixel_size_A"])
        priors = from_config.resolve_priors(simulator, theta.range_of(theta_A), found)
    write_json(job.output.priors, priors)
    log.info("priors: %s", priors)
