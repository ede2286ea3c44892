"""The whitening_check rule: latents of one random subset of particles, whitened and not, for the report's MMD."""

from __future__ import annotations

import numpy as np
import torch

from cryoflow.io import particles, starindex
from cryoflow.io.fileio import write_npz
from cryoflow.job import Job
from cryoflow.physics import preprocess
from cryoflow.sbi import devices, inference, models


def run(job: Job) -> None:
    log = job.start_log()
    image = job.params.image
    torch.set_num_threads(job.threads)
    device = devices.select_device(job.params.inference["device"], "inference.device")
    model, _ = models.load_model(job.input.model, device)
    star = job.input.star
    source = particles.open_dataset(star, job.params.source)
    rows = np.array(starindex.sample_rows(len(source), job.params.n_particles, job.params.seed))
    spectra = preprocess.read_noise_spectra(job.input.noise)
    result = {"rows": rows}
    ctf = particles.star_ctf(source.table, rows)[0] if model.ctf_context is not None else None
    for label, noise in (("whitened", spectra), ("raw", None)):
        images = preprocess.training_grid_images(source, rows, image["box_px"], image["pixel_size_A"], noise)
        batches = inference.batched(images, job.params.inference["batch_size"])
        post = inference.posterior_batches(
            model, batches, len(images), grid_points=256, n_samples=1, device=device, ctf=ctf
        )
        result[f"latent_{label}"] = post["latent"]
        result[f"mean_{label}"], result[f"std_{label}"] = post["mean"], post["std"]
        log.info("%s: %d particles, median posterior σ %.2f Å", label, len(rows), np.median(post["std"]))
    write_npz(job.output.npz, **result)
