"""The explicit-likelihood reference beside the estimator (the paper's Fig. 2C dashed line).

``validation_reference`` evaluates, on the first images of each fixed-SNR
held-out set, the exact posterior (``cryoflow.likelihood.exact``) with the
nuisances marginalized as the estimator must, or with the CTF known as a
CTF-estimated particle's, and the estimator's posterior on the same θ grid.
``diagnostics.likelihood_comparison`` turns that into the numbers of validation.json: per SNR and
mode, the 68th percentiles of |sample − θ| and |mean − θ| and the mean σ of
both, the median KL divergence from the exact posterior to the estimator's,
and the median σ ratio. ``dataset_reference`` does the same on particles,
where no truth exists; ``diagnostics.likelihood_agreement`` counts how often
the two posteriors' 90 % intervals miss each other.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from cryoflow.chunks import chunks
from cryoflow.likelihood import exact
from cryoflow.likelihood.gridsize import MODES
from cryoflow.sbi import heldout
from cryoflow.sbi.inference import CTF_KEYS, posterior_grid, summarize_grid_posterior
from cryoflow.sbi.models import memory_format

log = logging.getLogger(__name__)


def grid_settings(cfg: dict, mode: str) -> exact.GridSettings:
    """``GridSettings`` from a ``likelihood`` config block and a mode (``MODES``)."""
    if mode not in MODES:
        raise exact.LikelihoodError(f"likelihood.nuisance: {mode!r} is not one of {sorted(MODES)}")
    keys = (
        "refine_top",
        "refine_levels",
        "shift_points",
        "defocus_points",
        "b_factor_points",
        "bead_sigma_points",
        "max_memory_gb",
        "nuisance_refine_top",
        "nuisance_refine_levels",
        "nuisance_cells",
    )
    return exact.GridSettings(orientations=tuple(cfg["orientations"]), known=MODES[mode], **{k: cfg[k] for k in keys})


@torch.no_grad()
def estimator_log_density(
    model, images: np.ndarray, grid: np.ndarray, device, batch_size: int = 256, ctf: dict | None = None
) -> np.ndarray:
    """The estimator's log q(θ | image) (B, G) on 1-D θ cell centres ``grid`` (``ctf``: per-image CTF values)."""
    model.eval().to(device)
    model.embedding.to(memory_format=memory_format(model, device))
    grid_t = torch.as_tensor(grid, dtype=torch.float32, device=device)
    out = []
    for part in chunks(len(images), batch_size):
        batch = torch.as_tensor(np.asarray(images[part], dtype=np.float32), device=device)
        features = None if ctf is None else model.ctf_features({k: ctf[k][part] for k in CTF_KEYS if k in ctf})
        out.append(model.log_prob_grid(model.embedding(batch), grid_t, ctf=features).double().cpu().numpy())
    return np.concatenate(out)


def posteriors(
    log_likelihood: np.ndarray, theta_nodes, log_q: np.ndarray, grid: np.ndarray, n_samples: int, seed: int
) -> dict[str, np.ndarray]:
    """Summaries of the exact posterior (``exact_*``) and the estimator's (``estimator_*``) on one grid."""
    log_p = posterior_on_grid(log_likelihood, theta_nodes, grid)
    out = {
        "exact_log_density": log_p.astype(np.float32),
        "estimator_log_density": log_q.astype(np.float32),
        "kl_exact_to_estimator": kl_divergence(log_p, log_q),
    }
    for name, density in (("exact", log_p), ("estimator", log_q)):
        summary = summarize_grid_posterior(density, grid, n_samples, np.random.default_rng(seed))
        for key in ("mean", "std", "q05", "q95", "samples"):
            out[f"{name}_{key}"] = summary[key]
    return out


def validation_reference(simulator, model, validation: dict, seed: int, device) -> dict[str, np.ndarray]:
    """The exact and the estimated posteriors of the first ``likelihood.n_images`` of each fixed-SNR set.

    Returns flat arrays with one row per (mode, SNR, image): ``mode``, ``snr``, ``theta_true``,
    ``log_likelihood`` (rows, T) and ``posteriors``' keys.
    """
    cfg = validation["likelihood"]
    _, grid = posterior_grid(model.architecture["theta_range_A"], validation["grid_points"], 8)
    theta_nodes = simulator.templates.theta_A.cpu().numpy()
    rows: dict[str, list] = {}
    for mode in cfg["nuisance"]:
        engine = exact.ExplicitLikelihood(simulator, grid_settings(cfg, mode))
        for k, snr in enumerate(validation["fixed_snr"]):
            theta, nuisance, images = heldout.fixed_snr_set(simulator, snr, k, validation["n_fixed_snr"], seed)
            m = min(cfg["n_images"], len(theta))
            images = images[:m]
            known = {key: value[:m] for key, value in nuisance.items()}
            found = engine.log_likelihood(images, known, label=f"likelihood ({mode}) at SNR {snr:g}")
            log_q = estimator_log_density(model, images.cpu().numpy(), grid, device, ctf=known)
            part = posteriors(found["log_likelihood"], theta_nodes, log_q, grid, validation["n_samples"], seed + k)
            part.update(
                mode=np.full(m, mode),
                snr=np.full(m, float(snr)),
                theta_true=theta[:m].cpu().numpy(),
                log_likelihood=found["log_likelihood"],
                log_likelihood_coarse=found["log_likelihood_coarse"],
            )
            for key, value in part.items():
                rows.setdefault(key, []).append(value)
            log.info(
                "likelihood (%s) at SNR %g: %d images, median KL %.3f",
                mode,
                snr,
                m,
                float(np.median(part["kl_exact_to_estimator"])),
            )
    out = {key: np.concatenate(value) for key, value in rows.items()}
    out["theta_nodes_A"], out["grid_A"] = theta_nodes, grid
    return out


def complete_ctf(ctf: dict, priors, n: int) -> dict[str, np.ndarray]:
    """A STAR file's CTF (``particles.star_ctf``) with absent keys taken from the priors' first optics group."""
    group = priors.optics[0]
    fallback = {
        "defocus_v_A": ctf["defocus_u_A"],
        "astigmatism_angle_deg": 0.0,
        "phase_shift_deg": priors.phase_shift_range_deg[0],
        "voltage_kV": group["voltage_kV"],
        "cs_mm": group["cs_mm"],
        "amplitude_contrast": group["amplitude_contrast"],
    }
    out = {key: np.broadcast_to(np.asarray(value, dtype=float), (n,)) for key, value in fallback.items()}
    out.update({key: np.asarray(value, dtype=float) for key, value in ctf.items()})
    return out


def dataset_reference(
    simulator,
    model,
    images: np.ndarray,
    ctf: dict | None,
    cfg: dict,
    grid_points: int,
    seed: int,
    device,
    where: str = "dataset",
) -> dict[str, np.ndarray]:
    """The exact and the estimated posteriors of preprocessed particles (n, box, box), per nuisance mode.

    ``ctf`` (``particles.star_ctf``) is each particle's own CTF, needed by the mode ``ctf_known``.
    """
    _, grid = posterior_grid(model.architecture["theta_range_A"], grid_points, 8)
    theta_nodes = simulator.templates.theta_A.cpu().numpy()
    log_q = estimator_log_density(model, images, grid, device, ctf=ctf)
    rows: dict[str, list] = {}
    for mode in cfg["nuisance"]:
        known = None
        if "ctf" in MODES[mode]:
            if ctf is None:
                raise exact.LikelihoodError(
                    f"{where}: report.likelihood.nuisance ctf_known needs each particle's defocus (_rlnDefocusU)"
                )
            known = {
                key: torch.as_tensor(value) for key, value in complete_ctf(ctf, simulator.priors, len(images)).items()
            }
        engine = exact.ExplicitLikelihood(simulator, grid_settings(cfg, mode))
        found = engine.log_likelihood(images, known, label=f"likelihood ({mode})")
        part = posteriors(found["log_likelihood"], theta_nodes, log_q, grid, 1, seed)
        part.update(mode=np.full(len(images), mode), log_likelihood=found["log_likelihood"])
        for key, value in part.items():
            rows.setdefault(key, []).append(value)
    out = {key: np.concatenate(value) for key, value in rows.items()}
    out["theta_nodes_A"], out["grid_A"] = theta_nodes, grid
    return out


def posterior_on_grid(log_likelihood: np.ndarray, theta_nodes: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Log posterior densities (B, G) on θ cell centres ``grid``: uniform prior, log-likelihood linear in θ."""
    theta_nodes = np.asarray(theta_nodes, dtype=np.float64)
    return np.stack([np.interp(grid, theta_nodes, row) for row in np.asarray(log_likelihood, dtype=np.float64)])


def kl_divergence(log_p: np.ndarray, log_q: np.ndarray) -> np.ndarray:
    """KL(p ‖ q) (B,) in nats between two grid posteriors given as log densities (B, G) on the same cells."""
    lp = log_p - np.logaddexp.reduce(log_p, axis=1, keepdims=True)
    lq = log_q - np.logaddexp.reduce(log_q, axis=1, keepdims=True)
    return np.sum(np.exp(lp) * (lp - lq), axis=1)
