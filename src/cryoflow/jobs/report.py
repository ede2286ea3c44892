"""The report rule: one dataset's figures and ``summary.json`` from its posteriors, latents and the model's
simulations (MMD and UMAP of latents, whitening, populations, the predictive check, the known truth)."""

from __future__ import annotations

import logging

import numpy as np
import starfile
import umap

from cryoflow.analysis import diagnostics
from cryoflow.io.fileio import read_json, write_json
from cryoflow.io.mrcstack import gathered_images
from cryoflow.job import Job
from cryoflow.physics import theta
from cryoflow.report import figures

log = logging.getLogger("cryoflow.report")


def contrast_check(summary: dict, mean_particle: np.ndarray, mean_simulated: np.ndarray) -> None:
    """``summary["contrast_correlation"]``, and a warning where the particles' contrast looks inverted."""
    box = mean_particle.shape[-1]
    summary["contrast_correlation"] = diagnostics.contrast_correlation(mean_particle, mean_simulated, 0.35 * box)
    if summary["contrast_correlation"] < 0:
        summary["contrast_warning"] = (
            f"the mean particle correlates negatively (r = {summary['contrast_correlation']:.2f}) with the mean "
            "simulated image: the particles' contrast looks opposite to the simulations' (set the dataset's "
            "contrast to 'dark' if they were extracted without contrast inversion, or back to 'light')"
        )
        log.warning("%s", summary["contrast_warning"])


def latent_figures(post: dict, sim: dict, whitening: dict, summary: dict, stacks: list, files: dict, job: Job):
    """One UMAP for simulations, particles and the whitened / raw subset (so the panels share axes); returns
    the particles it drew."""
    cfg, seed = job.params.report, job.params.seed
    n_exp = len(post["latent"])
    pick_exp = np.sort(np.random.default_rng(seed).choice(n_exp, min(n_exp, 2000), replace=False))
    parts = [sim["latent"], post["latent"][pick_exp], whitening["latent_whitened"], whitening["latent_raw"]]
    embedded = umap.UMAP(n_neighbors=cfg["umap_neighbors"], random_state=seed).fit_transform(np.concatenate(parts))
    sim_2d, exp_2d, whitened_2d, raw_2d = np.split(embedded, np.cumsum([len(p) for p in parts])[:-1])
    marked = figures.distinct_points(exp_2d, 4)
    thumbnails = gathered_images(stacks, post["shard_particles"], pick_exp[marked])
    width = np.sqrt(np.sum(post["std"].reshape(n_exp, -1) ** 2, axis=1))  # σ, or √(σ₁² + σ₂²) for a 2-D θ
    mmd = summary["mmd2"], summary["mmd_pvalue"]
    figures.plot_latents(sim_2d, exp_2d, width[pick_exp], *mmd, files["latent_umap"], thumbnails, marked)
    figures.plot_whitening_mmd(sim_2d, whitened_2d, raw_2d, summary, files["whitening_mmd"])
    return pick_exp


def log_summary(summary: dict, truth: np.ndarray | None, n_dims: int) -> None:
    log.info("%s", summary["ppc_verdict"])
    log.info("model %s (card sha256 %s)", summary["model"]["name"], summary["model"]["card_sha256"])
    log.info("MMD² %.4g (p = %.3g)", summary["mmd2"], summary["mmd_pvalue"])
    log.info("%s", summary["mmd_verdict"])
    if truth is not None:
        keys = [k + theta.suffix(d, n_dims) for d in range(n_dims) for k in ("pearson_r", "coverage_90")]
        log.info("against the known truth: %s", {k: round(summary[k], 3) for k in keys})


def run(job: Job) -> None:
    job.start_log()
    cfg, inputs = job.params.report, job.input
    files = dict(zip(job.params.figures, job.output.figures))
    post = dict(np.load(inputs.posterior))
    post["latent"] = post["latent"].astype(np.float32)
    sim, whitening = dict(np.load(inputs.simulations)), dict(np.load(inputs.whitening))
    validation = read_json(inputs.validation)
    theta_range = post["theta_grid_range_A"]
    n_dims = theta.dims(theta_range)
    table = starfile.read(inputs.star, always_dict=True)
    particles = table.get("particles", next(iter(table.values())))
    truth = theta.true_theta(particles)
    summary = diagnostics.summarize(
        post, sim, validation, truth, cfg["mmd_permutations"], cfg["mmd_max_points"], job.params.seed, whitening
    )
    summary["theta_range_A"] = theta_range.tolist()
    if "cryoflowBlankImage" in particles:
        summary["n_blank_images"] = int(particles["cryoflowBlankImage"].sum())
        if summary["n_blank_images"]:
            log.warning("%d particles have blank (constant) images", summary["n_blank_images"])
    summary["model"] = validation["model"]
    summary.update({k: v for k, v in read_json(inputs.populations).items() if k != "n_particles"})
    summary.update(read_json(inputs.predictive))
    log_summary(summary, truth, n_dims)
    figures.plot_posteriors(post, theta_range, files["posterior_histograms"], truth, diagnostics.EDGE_MASS_ATYPICAL)
    pick_exp = latent_figures(post, sim, whitening, summary, inputs.stacks, files, job)
    n_exp = len(post["latent"])
    order = np.argsort(theta.columns(post["mean"], n_dims)[0])
    examples = order[np.linspace(0, n_exp - 1, min(cfg["n_example_particles"], n_exp)).astype(int)]
    images = gathered_images(inputs.stacks, post["shard_particles"], examples)
    figures.plot_examples(images, post, examples, files["example_particles"])
    # contrast: the mean particle against the mean simulated image (both on the training grid)
    mean_particle = gathered_images(inputs.stacks, post["shard_particles"], pick_exp).mean(axis=0)
    contrast_check(summary, mean_particle, sim["mean_image"])
    write_json(job.output.summary, summary)
    log.info("summary: %s", summary)
