"""The validate rule: held-out simulations (seeded) with their posteriors and latents."""

from __future__ import annotations

import numpy as np
import torch

from cryoflow.job import Job
from cryoflow.sbi import devices, models, validation
from cryoflow.workflow import from_config


def run(job: Job) -> None:
    log = job.start_log()
    settings = job.params.validation
    config = {"image": job.params.image, "simulator": job.params.simulator}
    torch.set_num_threads(job.threads)
    device = devices.select_device(settings["device"], "validation.device")
    model, _ = models.load_model(job.input.model, device)
    simulator = from_config.load_simulator(job.input, config, device=device)
    ensemble = np.load(job.input.ensemble)  # coords_A and theta_A are read
    arrays = validation.validation_arrays(model, simulator, ensemble, settings, job.params.seed, device)
    validation.write_validation(job.output.npz, arrays)
    log.info("validation: %d simulations", settings["n_simulations"])
