"""Rule report: one dataset's figures and summary.json from its posteriors, latents and the model's simulations."""

import json

import numpy as np
import starfile
import umap

from cryoflow.analysis import diagnostics
from cryoflow.io.fileio import write_json
from cryoflow.logs import configure
from cryoflow.physics import theta
from cryoflow.report import figures

log = configure(snakemake.log[0])
cfg = snakemake.params.report
seed = snakemake.params.seed
figure_files = dict(zip(snakemake.params.figures, snakemake.output.figures))
post = dict(np.load(snakemake.input.posterior))
post["latent"] = post["latent"].astype(np.float32)
sim = dict(np.load(snakemake.input.simulations))
validation = json.loads(open(snakemake.input.validation).read())
theta_range = post["theta_grid_range_A"]
n_dims = theta.dims(theta_range)
table = starfile.read(snakemake.input.star, always_dict=True)
particles = table.get("particles", next(iter(table.values())))
truth = theta.true_theta(particles)

whitening = dict(np.load(snakemake.input.whitening))
summary = diagnostics.summarize(
    post, sim, validation, truth, cfg["mmd_permutations"], cfg["mmd_max_points"], seed, whitening
)
summary["theta_range_A"] = theta_range.tolist()
if "cryoflowBlankImage" in particles:
    summary["n_blank_images"] = int(particles["cryoflowBlankImage"].sum())
    if summary["n_blank_images"]:
        log.warning("%d particles have blank (constant) images", summary["n_blank_images"])
summary["model"] = validation["model"]
summary.update({k: v for k, v in json.loads(open(snakemake.input.populations).read()).items() if k != "n_particles"})
summary.update(json.loads(open(snakemake.input.predictive).read()))
log.info("%s", summary["ppc_verdict"])
log.info("model %s (card sha256 %s)", summary["model"]["name"], summary["model"]["card_sha256"])
log.info("MMD² %.4g (p = %.3g)", summary["mmd2"], summary["mmd_pvalue"])
log.info("%s", summary["mmd_verdict"])
if truth is not None:
    keys = [k + theta.suffix(d, n_dims) for d in range(n_dims) for k in ("pearson_r", "coverage_90")]
    log.info("against the known truth: %s", {k: round(summary[k], 3) for k in keys})

figures.plot_posteriors(post, theta_range, figure_files["posterior_histograms"], truth, diagnostics.EDGE_MASS_ATYPICAL)
# one UMAP for simulations, experimental particles and the whitened / raw subset, so the panels share axes
n_exp = len(post["latent"])
rng = np.random.default_rng(seed)
pick_exp = np.sort(rng.choice(n_exp, min(n_exp, 2000), replace=False))
parts = [sim["latent"], post["latent"][pick_exp], whitening["latent_whitened"], whitening["latent_raw"]]
embedded = umap.UMAP(n_neighbors=cfg["umap_neighbors"], random_state=seed).fit_transform(np.concatenate(parts))
sim_2d, exp_2d, whitened_2d, raw_2d = np.split(embedded, np.cumsum([len(p) for p in parts])[:-1])
marked = figures.distinct_points(exp_2d, 4)
thumbnails = figures.gathered_images(snakemake.input.stacks, post["shard_particles"], pick_exp[marked])
width = np.sqrt(np.sum(post["std"].reshape(n_exp, -1) ** 2, axis=1))  # σ, or √(σ₁² + σ₂²) for a 2-D θ
figures.plot_latents(
    sim_2d,
    exp_2d,
    width[pick_exp],
    summary["mmd2"],
    summary["mmd_pvalue"],
    figure_files["latent_umap"],
    thumbnails,
    marked,
)
figures.plot_whitening_mmd(sim_2d, whitened_2d, raw_2d, summary, figure_files["whitening_mmd"])
order = np.argsort(theta.columns(post["mean"], n_dims)[0])
examples = order[np.linspace(0, n_exp - 1, min(cfg["n_example_particles"], n_exp)).astype(int)]
images = figures.gathered_images(snakemake.input.stacks, post["shard_particles"], examples)
figures.plot_examples(images, post, examples, figure_files["example_particles"])
# contrast: the mean particle against the mean simulated image (both on the training grid)
mean_particle = figures.gathered_images(snakemake.input.stacks, post["shard_particles"], pick_exp).mean(axis=0)
box = mean_particle.shape[-1]
summary["contrast_correlation"] = diagnostics.contrast_correlation(mean_particle, sim["mean_image"], 0.35 * box)
if summary["contrast_correlation"] < 0:
    summary["contrast_warning"] = (
        f"the mean particle correlates negatively (r = {summary['contrast_correlation']:.2f}) with the mean "
        "simulated image: the particles' contrast looks opposite to the simulations' (set the dataset's "
        "contrast to 'dark' if they were extracted without contrast inversion, or back to 'light')"
    )
    log.warning("%s", summary["contrast_warning"])
write_json(snakemake.output.summary, summary)
log.info("summary: %s", summary)
