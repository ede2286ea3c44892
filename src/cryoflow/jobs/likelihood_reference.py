"""The likelihood_reference rule: exact (BioEM-style) and estimated posteriors of held-out fixed-SNR images."""

from __future__ import annotations

import torch

from cryoflow.analysis import diagnostics
from cryoflow.io.fileio import write_npz
from cryoflow.job import Job
from cryoflow.likelihood import comparison
from cryoflow.sbi import devices, models
from cryoflow.workflow import from_config


def run(job: Job) -> None:
    log = job.start_log()
    torch.set_num_threads(job.threads)
    cfg = job.params.validation
    device = devices.select_device(cfg["device"], "validation.device")
    config = {"image": job.params.image, "simulator": job.params.simulator}
    model, _ = models.load_model(job.input.model, device)
    simulator = from_config.load_simulator(job.input, config, device=device)
    result = comparison.validation_reference(simulator, model, cfg, job.params.seed, device)
    write_npz(job.output.npz, **result)
    for entry in diagnostics.likelihood_comparison(result):
        log.info("%s", {k: round(v, 3) if isinstance(v, float) else v for k, v in entry.items()})
