"""The predictive_check rule: one dataset's particles against simulations at their own posterior θ and CTF
(``cryoflow.analysis.predictive``); ``predictive.npz`` and ``predictive.json``."""

from __future__ import annotations

import logging

import numpy as np
import torch

from cryoflow.analysis import predictive
from cryoflow.io import particles, starindex
from cryoflow.io.fileio import write_json, write_npz
from cryoflow.io.mrcstack import gathered_images
from cryoflow.job import Job
from cryoflow.physics import preprocess, whitening
from cryoflow.sbi import devices, inference, models
from cryoflow.workflow import from_config

log = logging.getLogger("cryoflow.predictive_check")


def log_result(result: predictive.PredictiveResult) -> None:
    log.info(
        "posterior-predictive: latents MMD² %.4g (p = %.3g), spectra MMD² %.4g (p = %.3g); %d atypical particles",
        result.mmd2,
        result.latent_pvalue,
        result.spectrum_mmd2,
        result.spectrum_pvalue,
        result.n_atypical,
    )
    for group, bias in result.noise_estimate_bias.items():
        log.info(
            "optics group %s: the predictive noise spectrum that the particles' estimator measures as theirs "
            "varies %.3g-fold over frequency against it (1: no signal in the background)",
            group,
            bias,
        )
    log.info("%s", result.verdict)


def run(job: Job) -> None:
    job.start_log()
    params, inputs = job.params, job.input
    torch.set_num_threads(job.threads)
    device = devices.select_device(params.inference["device"], "inference.device")
    model, _ = models.load_model(inputs.model, device)
    config = {"image": params.image, "simulator": params.simulator}
    simulator = from_config.load_simulator(inputs, config)  # on the CPU: small batches, numpy whitening
    post = np.load(inputs.posterior)
    table = particles.particle_table(inputs.star)
    rows = np.array(starindex.sample_rows(len(table), params.report["mmd_max_points"], params.seed))
    images = gathered_images(inputs.stacks, post["shard_particles"], rows)
    ctf, missing = particles.star_ctf(table, rows)  # each particle's own CTF where its row has one
    if ctf is None:
        log.warning("%s: no per-particle defocus; the predictive images take the prior's CTF", inputs.star)
    elif missing:
        log.info("CTF columns absent (the prior's values are used): %s", missing[:6])
    spectra = preprocess.read_noise_spectra(inputs.noise)
    groups = table["optics_group"].astype(str).to_numpy()[rows]
    # the predictive images' noise spectrum is measured outside the radius the particles' was
    noise_radius_px = whitening.noise_mask_radius_A(params.particles["mask_radius_A"], params.image)
    noise_radius_px /= simulator.pixel_size_A
    whiten = params.particles["whiten"]
    by_group = {
        g: predictive.PredictiveSimulator(simulator, spectra.get(g), whiten, noise_radius_px) for g in np.unique(groups)
    }

    def latents(batch: np.ndarray) -> np.ndarray:
        return inference.latents(model, batch, params.inference["batch_size"], device)

    samples, particle_latents = post["samples"][rows], post["latent"][rows].astype(np.float32)
    theta_range, permutations = post["theta_grid_range_A"], params.report["mmd_permutations"]
    result = predictive.check(
        by_group, images, groups, samples, particle_latents, theta_range, ctf, permutations, params.seed, latents
    )
    log_result(result)
    write_npz(
        job.output.npz,
        rows=rows,
        atypical_pvalue=result.atypical_pvalues,
        snr=result.snr,
        theta_A=result.theta_A,
        latent_predicted=result.predicted_latent.astype(np.float16),
    )
    write_json(job.output.summary, result.summary(len(rows), ctf is not None))
