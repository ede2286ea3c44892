"""The validate rule's protocol: posteriors of held-out simulations (``cryoflow.sbi.heldout``) drawn from the
prior, the junk-aware model's scores of held-out junk, sets at fixed SNRs (the paper's Fig. 2C), and each
view's angle to the ensemble's motion, as the arrays ``validation/simulations.npz`` holds."""

from __future__ import annotations

import numpy as np
import torch

from cryoflow.analysis import diagnostics
from cryoflow.io.fileio import write_npz
from cryoflow.physics.junk import KINDS as JUNK_KINDS
from cryoflow.physics.junk import junk_images
from cryoflow.sbi import heldout, inference

# added to the config's seed for the posterior samples of the k-th fixed-SNR set: seed + k + 1
FIXED_SNR_SAMPLE_OFFSET = 1


def posteriors(
    model, images: np.ndarray, settings: dict, ctf: dict, seed: int | None, device, label: str
) -> inference.PosteriorSummary:
    """Posterior summaries and samples of ``images`` with the validation settings (grid, samples, batch)."""
    return inference.posterior_batches(
        model,
        inference.batched(images, settings["batch_size"]),
        len(images),
        grid_points=settings["grid_points"],
        grid_points_2d=settings["grid_points_2d"],
        n_samples=settings["n_samples"],
        seed=seed,
        device=device,
        label=label,
        ctf=ctf,
    )


@torch.no_grad()
def junk_scores(model, simulator, n: int, settings: dict, ctf: dict, seed: int, device) -> dict:
    """A junk-aware model's p_particle of ``n`` held-out junk images, and their kinds (empty for other models)."""
    if model.particle is None:
        return {}
    rubbish, kind = junk_images(simulator, n, heldout.junk_generator(simulator, seed))
    found = inference.posterior_batches(
        model,
        inference.batched(rubbish.cpu().numpy(), settings["batch_size"]),
        n,
        grid_points=16,
        n_samples=1,
        device=device,
        label="validate junk",
        ctf=ctf,  # CTF-conditioned models: any CTF of the prior (only p_particle is read)
    )
    return {"junk_p_particle": found["p_particle"], "junk_kind": np.array(JUNK_KINDS)[kind.cpu().numpy()]}


def fixed_snr_posteriors(model, simulator, settings: dict, seed: int, device) -> dict:
    """Sets at one fixed SNR each (``fixed_snr``, ``n_fixed_snr`` images): θ, poses and CTFs from the prior,
    the SNR held; their true θ, posterior samples, means and σ, concatenated (``fixed_snr_*``)."""
    fixed: dict[str, list] = {"snr": [], "theta_true": [], "samples": [], "mean": [], "std": []}
    for k, snr in enumerate(settings["fixed_snr"]):
        theta_k, nuisance_k, images_k = heldout.fixed_snr_set(simulator, snr, k, settings["n_fixed_snr"], seed)
        post = posteriors(
            model,
            images_k.cpu().numpy(),
            settings,
            nuisance_k,
            seed + k + FIXED_SNR_SAMPLE_OFFSET,
            device,
            f"validate at SNR {snr}",
        )
        fixed["snr"].append(np.full(len(images_k), snr))
        fixed["theta_true"].append(theta_k.cpu().numpy())
        for key in ("samples", "mean", "std"):
            fixed[key].append(post[key])
    return {f"fixed_snr_{key}": np.concatenate(value) if value else np.zeros(0) for key, value in fixed.items()}


def validation_arrays(model, simulator, ensemble: dict, settings: dict, seed: int, device) -> dict[str, np.ndarray]:
    """Everything ``validation/simulations.npz`` holds: ``settings`` is the config's ``validation`` section,
    ``ensemble`` the templates' ``coords_A`` and ``theta_A``."""
    n = settings["n_simulations"]
    theta, nuisance, images = heldout.calibration_set(simulator, n, seed)
    images = images.cpu().numpy()
    result = posteriors(model, images, settings, nuisance, seed, device, "validate")
    # the beam direction in the template frame is Rᵀ e_z, the third row of the rotation
    beam = nuisance["rotation"][:, 2, :].cpu().numpy()
    axes = diagnostics.motion_axes(ensemble["coords_A"], ensemble["theta_A"])
    view = np.stack([diagnostics.view_angle_deg(beam, axis) for axis in axes], axis=-1)  # a column per θ coordinate
    return {
        "theta_true": theta.cpu().numpy(),
        "snr": nuisance["snr"].cpu().numpy(),
        "defocus_A": (0.5 * (nuisance["defocus_u_A"] + nuisance["defocus_v_A"])).cpu().numpy(),
        "beam_direction": beam,
        "view_angle_deg": view[:, 0] if len(axes) == 1 else view,
        "images": images[:16],
        "mean_image": images.mean(axis=0),
        **fixed_snr_posteriors(model, simulator, settings, seed, device),
        **junk_scores(model, simulator, n, settings, nuisance, seed, device),
        **result,
    }


def write_validation(path, arrays: dict) -> None:
    """``validation/simulations.npz``, atomically."""
    write_npz(path, **arrays)
