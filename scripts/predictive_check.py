"""Rule predictive_check: one dataset's particles against simulations at their own posterior θ and CTF."""

import numpy as np
import torch

from cryoflow.analysis import predictive
from cryoflow.io import particles, starindex
from cryoflow.io.fileio import atomic_path, write_json
from cryoflow.logs import configure
from cryoflow.physics import preprocess, whitening
from cryoflow.report import figures
from cryoflow.sbi import inference, models, training
from cryoflow.workflow import pipeline

log = configure(snakemake.log[0])
params = snakemake.params
config = {"image": params.image, "simulator": params.simulator}
torch.set_num_threads(snakemake.threads)
device = training.select_device(params.inference["device"])
model, _ = models.load_model(snakemake.input.model, device)
simulator = pipeline.load_simulator(snakemake.input, config)  # on the CPU: small batches, numpy whitening
post = np.load(snakemake.input.posterior)
table = particles.particle_table(snakemake.input.star)
rows = np.array(starindex.sample_rows(len(table), params.report["mmd_max_points"], params.seed))
images = figures.gathered_images(snakemake.input.stacks, post["shard_particles"], rows)
# each particle's own CTF, where its STAR row has one; the prior's otherwise
ctf, missing = particles.star_ctf(table, rows)
if ctf is None:
    log.warning("%s: no per-particle defocus; the predictive images take the prior's CTF", snakemake.input.star)
elif missing:
    log.info("CTF columns absent (the prior's values are used): %s", missing[:6])
spectra = preprocess.read_noise_spectra(snakemake.input.noise)
groups = table["optics_group"].astype(str).to_numpy()[rows]
# the predictive images' noise spectrum is measured outside the radius the particles' was
noise_radius_A = whitening.noise_mask_radius_A(params.particles["mask_radius_A"], params.image)
noise_radius_px = noise_radius_A / simulator.pixel_size_A
whiten = params.particles["whiten"]
by_group = {
    g: predictive.PredictiveSimulator(simulator, spectra.get(g), whiten, noise_radius_px) for g in np.unique(groups)
}


def latents(batch: np.ndarray) -> np.ndarray:
    return inference.latents(model, batch, params.inference["batch_size"], device)


particle_latents = post["latent"][rows].astype(np.float32)
result = predictive.check(
    by_group,
    images,
    groups,
    post["samples"][rows],
    particle_latents,
    post["theta_grid_range_A"],
    ctf,
    params.report["mmd_permutations"],
    params.seed,
    latents,
)
log.info(
    "posterior-predictive: latents MMD² %.4g (p = %.3g), spectra MMD² %.4g (p = %.3g); %d atypical particles",
    result["mmd2"],
    result["latent_pvalue"],
    result["spectrum_mmd2"],
    result["spectrum_pvalue"],
    result["n_atypical"],
)
for group, bias in result["noise_estimate_bias"].items():
    log.info(
        "optics group %s: the predictive noise spectrum that the particles' estimator measures as theirs varies "
        "%.3g-fold over frequency against it (1: no signal in the background)",
        group,
        bias,
    )
log.info("%s", result["verdict"])
with atomic_path(snakemake.output.npz) as tmp, open(tmp, "wb") as handle:
    np.savez(
        handle,
        rows=rows,
        atypical_pvalue=result["atypical_pvalues"],
        snr=result["snr"],
        theta_A=result["theta_A"],
        latent_predicted=result["predicted_latent"].astype(np.float16),
    )
write_json(
    snakemake.output.summary,
    {
        "ppc_mmd2": result["mmd2"],
        "ppc_pvalue": result["pvalue"],
        "ppc_latent_pvalue": result["latent_pvalue"],
        "ppc_spectrum_mmd2": result["spectrum_mmd2"],
        "ppc_spectrum_pvalue": result["spectrum_pvalue"],
        "ppc_bandwidth": result["bandwidth"],
        "ppc_n_particles": int(len(rows)),
        "ppc_n_atypical": result["n_atypical"],
        "ppc_verdict": result["verdict"],
        "ppc_ctf_from_star": ctf is not None,
        "ppc_noise_estimate_bias": result["noise_estimate_bias"],
        "ppc_median_snr": float(np.median(result["snr"])),
    },
)
