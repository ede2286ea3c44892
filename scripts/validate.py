"""Rule validate: held-out simulations (seeded) with their posteriors and latents."""

import numpy as np
import torch

from cryoflow.analysis import diagnostics
from cryoflow.io.fileio import atomic_path
from cryoflow.logs import configure
from cryoflow.physics.junk import KINDS as JUNK_KINDS
from cryoflow.physics.junk import junk_images
from cryoflow.sbi import heldout, inference, models, training
from cryoflow.workflow import pipeline

log = configure(snakemake.log[0])
cfg = snakemake.params.validation
seed = snakemake.params.seed
config = {"image": snakemake.params.image, "simulator": snakemake.params.simulator}
torch.set_num_threads(snakemake.threads)
device = training.select_device(cfg["device"])
model, _ = models.load_model(snakemake.input.model, device)
simulator = pipeline.load_simulator(snakemake.input, config, device=device)
n = cfg["n_simulations"]
theta, nuisance, images = heldout.calibration_set(simulator, n, seed)
images = images.cpu().numpy()
result = inference.posterior_batches(
    model,
    inference.batched(images, cfg["batch_size"]),
    n,
    grid_points=cfg["grid_points"],
    grid_points_2d=cfg["grid_points_2d"],
    n_samples=cfg["n_samples"],
    seed=seed,
    device=device,
    label="validate",
    ctf=nuisance,
)
# junk-aware models: held-out images without a centred particle, scored by the particle output
junk = {}
if model.particle is not None:
    with torch.no_grad():
        rubbish, kind = junk_images(simulator, n, heldout.junk_generator(simulator, seed))
        found = inference.posterior_batches(
            model,
            inference.batched(rubbish.cpu().numpy(), cfg["batch_size"]),
            n,
            grid_points=16,
            n_samples=1,
            device=device,
            label="validate junk",
            ctf=nuisance,  # CTF-conditioned models: any CTF of the prior (only p_particle is read)
        )
    junk = {"junk_p_particle": found["p_particle"], "junk_kind": np.array(JUNK_KINDS)[kind.cpu().numpy()]}
# sets at one fixed SNR each (Fig. 2C): θ, poses and CTFs from the prior, the SNR held
fixed = {"snr": [], "theta_true": [], "samples": [], "mean": [], "std": []}
for k, snr in enumerate(cfg["fixed_snr"]):
    theta_k, nuisance_k, images_k = heldout.fixed_snr_set(simulator, snr, k, cfg["n_fixed_snr"], seed)
    images_k = images_k.cpu().numpy()
    post_k = inference.posterior_batches(
        model,
        inference.batched(images_k, cfg["batch_size"]),
        len(images_k),
        grid_points=cfg["grid_points"],
        grid_points_2d=cfg["grid_points_2d"],
        n_samples=cfg["n_samples"],
        seed=seed + k + 1,
        device=device,
        label=f"validate at SNR {snr}",
        ctf=nuisance_k,
    )
    for key, value in (
        ("snr", np.full(len(images_k), snr)),
        ("theta_true", theta_k.cpu().numpy()),
        ("samples", post_k["samples"]),
        ("mean", post_k["mean"]),
        ("std", post_k["std"]),
    ):
        fixed[key].append(value)
fixed = {f"fixed_snr_{key}": np.concatenate(value) if value else np.zeros(0) for key, value in fixed.items()}
# the beam direction in the template frame is Rᵀ e_z, the third row of the rotation
beam = nuisance["rotation"][:, 2, :].cpu().numpy()
ensemble = np.load(snakemake.input.ensemble)
axes = diagnostics.motion_axes(ensemble["coords_A"], ensemble["theta_A"])
view = np.stack([diagnostics.view_angle_deg(beam, axis) for axis in axes], axis=-1)  # one column per θ coordinate
with atomic_path(snakemake.output.npz) as tmp, open(tmp, "wb") as handle:
    np.savez(
        handle,
        theta_true=theta.cpu().numpy(),
        snr=nuisance["snr"].cpu().numpy(),
        defocus_A=(0.5 * (nuisance["defocus_u_A"] + nuisance["defocus_v_A"])).cpu().numpy(),
        beam_direction=beam,
        view_angle_deg=view[:, 0] if len(axes) == 1 else view,
        images=images[:16],
        mean_image=images.mean(axis=0),
        **fixed,
        **junk,
        **result,
    )
log.info("validation: %d simulations", n)
