"""A fixed yardstick for estimators: seeded images with their exact log-likelihood per template, and a scorer.

``make_reference`` draws ``n`` images per SNR from a model recipe's simulator (its templates and priors), each
with its true θ and nuisances, and evaluates the exact log-likelihood of every template
(``cryoflow.likelihood.exact``) per nuisance mode. That is the costly part, done once; ``score`` then rates any
estimator trained for the same templates and image grid on those images in seconds. The primary number is
the mean excess negative log density at the true θ over the exact posterior's: its mean over images is the
expected KL divergence from the exact posterior to the estimator (up to the exact posterior's own
discretization), with a standard error, and far less noisy than a percentile of one sample per image.

``theta_convergence`` checks the reference in θ: the log-likelihood at conformations halfway between
templates (interpolated as the simulator interpolates them) against its linear interpolation over the
template nodes, which is how the exact posterior is put on the θ grid.

The reference records the checksum of the ensemble it was made from, the priors and the image grid; ``check``
refuses a model whose card names others, naming the file and the field.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch

from cryoflow.analysis.diagnostics import excess_at_truth
from cryoflow.errors import InputError
from cryoflow.likelihood import comparison, exact
from cryoflow.physics.projection import AtomTemplates, interpolate_coords
from cryoflow.physics.simulator import Simulator
from cryoflow.sbi import heldout
from cryoflow.sbi.inference import posterior_grid, summarize_grid_posterior

FORMAT = "cryoflow-yardstick-v1"
SEED_OFFSET = 7_919  # the yardstick's images are not the validation's fixed-SNR sets
# priors that may differ between the reference and a model it scores: the images are drawn at fixed SNRs
FREE_PRIORS = ("snr_range",)


def settings_sha256(priors: dict, box_px: int, pixel_size_A: float) -> str:
    """One checksum of what makes the images: the priors (but those in ``FREE_PRIORS``) and the image grid."""
    fixed = {k: v for k, v in priors.items() if k not in FREE_PRIORS}
    payload = json.dumps([fixed, int(box_px), float(pixel_size_A)], sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()


def make_reference(
    simulator: Simulator,
    snrs,
    n: int,
    seed: int,
    settings: dict[str, exact.GridSettings],
    provenance: dict,
) -> dict[str, np.ndarray]:
    """Images (rows, box, box) at each SNR with θ, nuisances and ``log_likelihood_<mode>`` (rows, T).

    ``settings``: grid settings per nuisance mode; ``provenance``: ``ensemble_sha256`` and ``settings_sha256``.
    """
    rows: dict[str, list] = {}
    engines = {mode: exact.ExplicitLikelihood(simulator, grid) for mode, grid in settings.items()}
    for k, snr in enumerate(snrs):
        theta, nuisance, images = heldout.fixed_snr_set(simulator, float(snr), k, n, seed + SEED_OFFSET)
        part = {"theta_true": theta, "snr": nuisance["snr"], "images": images}
        part.update({f"nuisance_{key}": value for key, value in nuisance.items()})
        for mode, engine in engines.items():
            found = engine.log_likelihood(images, nuisance, label=f"yardstick ({mode}) at SNR {snr:g}")
            part[f"log_likelihood_{mode}"] = found["log_likelihood"]
        for key, value in part.items():
            rows.setdefault(key, []).append(np.asarray(value.cpu() if torch.is_tensor(value) else value))
    out = {key: np.concatenate(value) for key, value in rows.items()}
    out["theta_nodes_A"] = simulator.templates.theta_A.cpu().numpy()
    out["modes"] = np.array(list(settings))
    out["format"] = np.array(FORMAT)
    out.update({key: np.array(value) for key, value in provenance.items()})
    return out


def load(path: str | Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path) as handle:
            ref = {key: handle[key] for key in handle.files}
    except (OSError, ValueError) as err:
        raise InputError(f"{path}: not a readable yardstick reference ({err})") from err
    if str(ref.get("format", "")) != FORMAT:
        raise InputError(f"{path}: field 'format' is not {FORMAT!r}")
    return ref


def check(reference_path, ref: dict, card: dict, card_path) -> None:
    """Refuse a reference made for other templates, priors or image grid than the model's card names."""
    ensemble = card.get("checksums_sha256", {}).get("ensemble")
    if ensemble != str(ref["ensemble_sha256"]):
        raise InputError(
            f"{reference_path}: field 'ensemble_sha256' is {str(ref['ensemble_sha256'])[:12]}…, but {card_path} "
            f"names ensemble {str(ensemble)[:12]}…: the reference was made for other templates (make it again)"
        )
    grid = card["config"]["image"]
    found = settings_sha256(card["priors"], grid["box_px"], grid["pixel_size_A"])
    if found != str(ref["settings_sha256"]):
        raise InputError(
            f"{reference_path}: field 'settings_sha256' does not match the priors and image grid of {card_path}: "
            "the reference was made with other simulator settings (make it again)"
        )


def p68_error(log_density: np.ndarray, grid: np.ndarray, theta: np.ndarray) -> float:
    """The 68th percentile of |θ − θ_true| under the posteriors, pooled over images (exact, no sampling)."""
    weight = np.exp(log_density - np.logaddexp.reduce(log_density, axis=1, keepdims=True))
    distance = np.abs(grid[None, :] - theta[:, None]).ravel()
    order = np.argsort(distance)
    cumulative = np.cumsum(weight.ravel()[order]) / len(theta)
    return float(distance[order][np.searchsorted(cumulative, 0.68)])


def score(ref: dict, model, device, grid_points: int = 512) -> list[dict]:
    """Per nuisance mode and SNR: the estimator against the exact posterior on the reference's images."""
    _, grid = posterior_grid(model.architecture["theta_range_A"], grid_points, 8)
    known = nuisances(ref)
    return score_densities(ref, comparison.estimator_log_density(model, ref["images"], grid, device, ctf=known), grid)


def nuisances(ref: dict, rows=slice(None)) -> dict[str, np.ndarray]:
    """Each reference image's nuisances (pose, shift, CTF, …) in the simulator's keys, for ``rows``."""
    return {key.removeprefix("nuisance_"): ref[key][rows] for key in ref if key.startswith("nuisance_")}


def score_densities(ref: dict, log_q_all: np.ndarray, grid: np.ndarray) -> list[dict]:
    """``score`` given the estimator's log densities (rows, G) on the θ cell centres ``grid``."""
    entries = []
    for mode in ref["modes"].tolist():
        log_p_all = comparison.posterior_on_grid(ref[f"log_likelihood_{mode}"], ref["theta_nodes_A"], grid)
        for snr in dict.fromkeys(ref["snr"].tolist()):
            rows = ref["snr"] == snr
            theta, log_p, log_q = ref["theta_true"][rows], log_p_all[rows], log_q_all[rows]
            excess = excess_at_truth(log_p, log_q, grid, theta)
            std = {
                name: summarize_grid_posterior(d, grid, 1, np.random.default_rng(0))["std"]
                for name, d in (("exact", log_p), ("estimator", log_q))
            }
            entry = {
                "nuisance": mode,
                "snr": float(snr),
                "n": int(rows.sum()),
                "excess_nll": float(np.mean(excess)),
                "excess_per_image": excess,  # for paired differences between models on the same images
                "excess_nll_se": float(np.std(excess, ddof=1) / np.sqrt(len(excess))) if len(excess) > 1 else np.nan,
                "median_std_ratio": float(np.median(std["estimator"] / std["exact"])),
                "p68_exact_A": p68_error(log_p, grid, theta),
                "p68_estimator_A": p68_error(log_q, grid, theta),
                "median_kl": float(np.median(comparison.kl_divergence(log_p, log_q))),
            }
            entry["p68_ratio"] = entry["p68_estimator_A"] / entry["p68_exact_A"]
            entries.append(entry)
    return entries


def midpoint_simulator(simulator: Simulator) -> Simulator:
    """The same simulator with templates halfway between the original ones, interpolated as images are."""
    templates = simulator.templates
    if not isinstance(templates, AtomTemplates):
        raise InputError("the θ-convergence check needs atomic templates (simulator.projection: atoms)")
    nodes = templates.theta_A
    middle = 0.5 * (nodes[1:] + nodes[:-1])
    coords = interpolate_coords(templates.coords, templates.axes, middle)
    halfway = AtomTemplates(
        coords.cpu(),
        middle.cpu(),
        templates.weights.cpu(),
        templates.oversample,
        center_A=torch.zeros(3),
        device=templates.device,
    )
    return Simulator(halfway, simulator.box, simulator.pixel_size_A, simulator.priors, simulator.noise_filter)


def theta_convergence(simulator: Simulator, ref: dict, mode: str, settings: exact.GridSettings, snr: float, n: int):
    """|log L at the midpoints − its interpolation over the nodes| and the posteriors' KL, for ``n`` images."""
    rows = np.flatnonzero(ref["snr"] == snr)[:n]
    nuisance = {key: torch.as_tensor(value) for key, value in nuisances(ref, rows).items()}
    images = torch.as_tensor(ref["images"][rows])
    engine = exact.ExplicitLikelihood(midpoint_simulator(simulator), settings)
    middle = engine.log_likelihood(images, nuisance, label=f"midpoints ({mode}) at SNR {snr:g}")["log_likelihood"]
    nodes = ref["theta_nodes_A"]
    at_nodes = ref[f"log_likelihood_{mode}"][rows]
    interpolated = 0.5 * (at_nodes[:, 1:] + at_nodes[:, :-1])
    both = np.sort(np.concatenate([nodes, 0.5 * (nodes[1:] + nodes[:-1])]))
    fine = np.empty((len(rows), len(both)))
    fine[:, 0::2], fine[:, 1::2] = at_nodes, middle
    _, grid = posterior_grid([float(nodes[0]), float(nodes[-1])], 512, 8)
    kl = comparison.kl_divergence(
        comparison.posterior_on_grid(fine, both, grid), comparison.posterior_on_grid(at_nodes, nodes, grid)
    )
    # only where the posterior has mass: the differences far from the truth carry no weight
    weight = np.exp(middle - np.logaddexp.reduce(middle, axis=1, keepdims=True))
    return {
        "snr": float(snr),
        "n": len(rows),
        "max_abs_difference": float(np.max(np.abs(middle - interpolated))),
        "mass_weighted_abs_difference": float(np.mean(np.sum(weight * np.abs(middle - interpolated), axis=1))),
        "median_kl_fine_to_nodes": float(np.median(kl)),
        "max_kl_fine_to_nodes": float(np.max(kl)),
    }
