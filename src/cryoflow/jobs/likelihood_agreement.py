"""The likelihood_agreement rule: exact (BioEM-style) and estimated posteriors of a seeded subset of particles."""

from __future__ import annotations

import numpy as np
import torch

from cryoflow.analysis import diagnostics
from cryoflow.io import particles, starindex
from cryoflow.io.fileio import write_json, write_npz
from cryoflow.io.mrcstack import gathered_images
from cryoflow.job import Job
from cryoflow.likelihood import comparison
from cryoflow.sbi import devices, models
from cryoflow.workflow import from_config


def run(job: Job) -> None:
    log = job.start_log()
    params = job.params
    cfg = params.likelihood["likelihood"]
    torch.set_num_threads(job.threads)
    device = devices.select_device(params.inference["device"], "inference.device")
    model, _ = models.load_model(job.input.model, device)
    simulator = from_config.load_simulator(
        job.input, {"image": params.image, "simulator": params.simulator}, device=device
    )
    post = np.load(job.input.posterior)
    table = particles.particle_table(job.input.star)
    rows = np.array(starindex.sample_rows(len(table), cfg["n_images"], params.seed))
    images = gathered_images(job.input.stacks, post["shard_particles"], rows)
    ctf, missing = particles.star_ctf(table, rows)
    if ctf is not None and missing:
        log.info("CTF columns absent (the prior's values are used): %s", missing)
    result = comparison.dataset_reference(
        simulator, model, images, ctf, cfg, params.inference["grid_points"], params.seed, device, where=job.input.star
    )
    summary = {}
    for mode in cfg["nuisance"]:
        chosen = {
            key: value[result["mode"] == mode]
            for key, value in result.items()
            if key not in ("theta_nodes_A", "grid_A")
        }
        summary[mode] = diagnostics.likelihood_agreement(chosen)
        log.info("exact vs estimated posteriors (%s): %s", mode, summary[mode])
    write_npz(job.output.npz, rows=rows, **result)
    write_json(job.output.summary, {"likelihood_agreement": summary, "n_particles": int(len(rows))})
