"""Per-particle posteriors: embed images, evaluate q(θ | image) on a fine θ grid.

The posterior density restricted to the prior range is evaluated exactly
on ``grid_points`` cells (1-D θ) or ``grid_points_2d``² cells (2-D θ); mean,
standard deviation, quantiles and MAP come from that discretized density
(per coordinate, from its marginals, for 2-D θ), and samples are drawn by
inverse CDF (jointly, uniform within the drawn cell, for 2-D θ).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TypedDict, cast

import numpy as np
import torch
from jaxtyping import Float

from cryoflow.analysis.diagnostics import edge_cells
from cryoflow.chunks import chunks
from cryoflow.io.npz import NpzWriter
from cryoflow.logs import Progress
from cryoflow.physics.theta import bounds
from cryoflow.sbi.models import PosteriorEstimator, memory_format

QUANTILES = (0.05, 0.5, 0.95)
CTF_KEYS = ("defocus_u_A", "defocus_v_A", "phase_shift_deg")  # what a CTF-conditioned model reads


class PosteriorSummary(TypedDict, total=False):
    """One batch's (or set's) posterior summaries, per image: (B,) for a 1-D θ, (B, 2) for a 2-D θ (each
    coordinate's marginal; ``map`` the most probable cell); ``samples`` (B, S) or (B, S, 2). What
    ``posterior_stream`` yields, ``posterior.npz`` holds and ``star_columns`` writes to STAR files."""

    mean: np.ndarray
    std: np.ndarray
    map: np.ndarray
    q05: np.ndarray  # the QUANTILES
    q50: np.ndarray
    q95: np.ndarray
    edge_mass: np.ndarray  # (B,): the posterior's mass in the cells at the prior's edges
    samples: np.ndarray
    latent: np.ndarray  # (B, L): the embedding's latent
    p_particle: np.ndarray  # (B,): junk-aware models only


def theta_grid(theta_range_A, grid_points: int) -> Float[np.ndarray, " grid"]:
    """Cell centres of ``grid_points`` equal cells spanning a 1-D prior range."""
    low, high = theta_range_A
    width = (high - low) / grid_points
    return low + width * (np.arange(grid_points) + 0.5)


def cell_edges(grid: Float[np.ndarray, " grid"]) -> Float[np.ndarray, " edges"]:
    width = grid[1] - grid[0]
    return np.concatenate([grid - 0.5 * width, [grid[-1] + 0.5 * width]])


def normalized_mass(log_density: Float[np.ndarray, "batch grid"]) -> Float[np.ndarray, "batch grid"]:
    """Cell probabilities (B, G) from log densities on equal cells, each row summing to one."""
    mass = np.exp(log_density - log_density.max(axis=1, keepdims=True))
    return mass / mass.sum(axis=1, keepdims=True)


def cumulative(mass: Float[np.ndarray, "batch grid"]) -> Float[np.ndarray, "batch edges"]:
    """CDF (B, G + 1) at the cell edges, from 0 to exactly 1."""
    cdf = np.concatenate([np.zeros((len(mass), 1)), np.cumsum(mass, axis=1)], axis=1)
    cdf[:, -1] = 1.0
    return cdf


def marginal_summary(mass: Float[np.ndarray, "batch grid"], grid: Float[np.ndarray, " grid"]) -> PosteriorSummary:
    """Mean, std, quantiles and MAP (B,) of cell probabilities (B, G) on 1-D cell centres ``grid``."""
    mean = mass @ grid
    std = np.sqrt(np.maximum(mass @ grid**2 - mean**2, 0.0))
    cdf, edges = cumulative(mass), cell_edges(grid)
    q05, q50, q95 = (np.array([np.interp(q, c, edges) for c in cdf]) for q in QUANTILES)
    return PosteriorSummary(mean=mean, std=std, map=grid[np.argmax(mass, axis=1)], q05=q05, q50=q50, q95=q95)


def summarize_grid_posterior(
    log_density: np.ndarray, grid: np.ndarray, n_samples: int, rng: np.random.Generator
) -> PosteriorSummary:
    """Mean, std, quantiles, MAP and inverse-CDF samples from log densities (B, G) on cell centres."""
    mass = normalized_mass(log_density)
    out = marginal_summary(mass, grid)
    out["edge_mass"] = mass[:, edge_cells(grid)].sum(axis=1)
    cdf, edges = cumulative(mass), cell_edges(grid)
    uniforms = rng.random((len(mass), n_samples))
    out["samples"] = np.stack([np.interp(u, c, edges) for u, c in zip(uniforms, cdf)]).astype(np.float32)
    return out


def summarize_grid_posterior_2d(
    log_density: np.ndarray, axes: list[np.ndarray], n_samples: int, rng: np.random.Generator
) -> PosteriorSummary:
    """The 2-D counterpart of ``summarize_grid_posterior`` on the row-major grid of cell centres ``axes``.

    Mean, std and quantiles (B, 2) are those of the two marginals; MAP (B, 2)
    is the most probable cell; samples (B, S, 2) are drawn jointly: a cell
    by inverse CDF of the flattened grid, then a uniform point in it.
    """
    n1, n2 = len(axes[0]), len(axes[1])
    mass = normalized_mass(log_density).reshape(-1, n1, n2)
    marginals = [marginal_summary(mass.sum(axis=2), axes[0]), marginal_summary(mass.sum(axis=1), axes[1])]
    per_coordinate = [cast(dict[str, np.ndarray], m) for m in marginals]
    out = cast(
        PosteriorSummary, {key: np.stack([m[key] for m in per_coordinate], axis=-1) for key in per_coordinate[0]}
    )
    best = np.argmax(mass.reshape(len(mass), -1), axis=1)
    out["map"] = np.stack([axes[0][best // n2], axes[1][best % n2]], axis=-1)
    edge = edge_cells(axes[0])[:, None] | edge_cells(axes[1])[None, :]
    out["edge_mass"] = mass[:, edge].sum(axis=1)
    cdf = np.cumsum(mass.reshape(len(mass), -1), axis=1)
    cdf[:, -1] = 1.0
    cell = np.stack([np.searchsorted(c, u, side="right") for c, u in zip(cdf, rng.random((len(mass), n_samples)))])
    cell = np.minimum(cell, n1 * n2 - 1)
    jitter = rng.random((len(mass), n_samples, 2)) - 0.5
    widths = [axis[1] - axis[0] for axis in axes]
    out["samples"] = np.stack(
        [axes[0][cell // n2] + jitter[..., 0] * widths[0], axes[1][cell % n2] + jitter[..., 1] * widths[1]], axis=-1
    ).astype(np.float32)
    return out


def posterior_grid(theta_range_A, grid_points: int, grid_points_2d: int):
    """Cell centres per coordinate and the grid points (G,) or (G, 2), row-major, for a prior range."""
    ranges = bounds(theta_range_A)
    axes = [theta_grid(r, grid_points if len(ranges) == 1 else grid_points_2d) for r in ranges]
    if len(axes) == 1:
        return axes, axes[0]
    return axes, np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 2)


@torch.no_grad()
def posterior_stream(
    model: PosteriorEstimator,
    image_batches,
    n_images: int,
    grid_points: int = 512,
    n_samples: int = 100,
    seed: int = 0,
    device="cpu",
    label: str = "infer",
    grid_points_2d: int = 32,
    ctf: dict | None = None,
) -> Iterator[PosteriorSummary]:
    """Yield posterior summaries and latents batch by batch for the images of ``image_batches``.

    Nothing is kept between batches, so memory does not grow with the
    number of particles; progress (particles/s, ETA) goes to the log.
    ``ctf``: per-image CTF values of all ``n_images`` in the simulator's keys
    (``defocus_u_A`` …), in the batches' order, for a CTF-conditioned model.
    """
    model.eval().to(device)
    model.embedding.to(memory_format=memory_format(model, device))  # type: ignore[call-overload]  # torch's stubs omit Module.to(memory_format=)
    axes, grid = posterior_grid(model.architecture["theta_range_A"], grid_points, grid_points_2d)
    grid_t = torch.as_tensor(grid, dtype=torch.float32, device=device)
    rng = np.random.default_rng(seed)
    progress = Progress(n_images, label, unit="particles")
    offset = 0
    for batch in image_batches:
        images = torch.as_tensor(np.array(batch, dtype=np.float32), device=device)  # a writable copy
        latent = model.embedding(images)
        features = None
        if model.ctf_context is not None and ctf is not None:
            features = model.ctf_features(
                {key: value[offset : offset + len(images)] for key, value in ctf.items() if key in CTF_KEYS}
            )
        offset += len(images)
        log_density = model.log_prob_grid(latent, grid_t, ctf=features).double().cpu().numpy()
        if len(axes) == 1:
            summary = summarize_grid_posterior(log_density, grid, n_samples, rng)
        else:
            summary = summarize_grid_posterior_2d(log_density, axes, n_samples, rng)
        summary["latent"] = latent.float().cpu().numpy()
        if model.particle is not None:
            summary["p_particle"] = torch.sigmoid(model.particle_logit(latent)).cpu().numpy()
        progress.update(len(images))
        yield summary


def posterior_batches(model: PosteriorEstimator, image_batches, n_images: int, **options) -> PosteriorSummary:
    """All of ``posterior_stream`` concatenated: for held-out simulations and other small sets."""
    parts: dict[str, list] = {}
    for summary in posterior_stream(model, image_batches, n_images, **options):
        for key, value in summary.items():
            parts.setdefault(key, []).append(value)
    if not parts:
        raise ValueError("no images to run inference on")
    return cast(PosteriorSummary, {key: np.concatenate(value) for key, value in parts.items()})


@torch.no_grad()
def latents(model: PosteriorEstimator, images: np.ndarray, batch_size: int = 256, device="cpu") -> np.ndarray:
    """The embedding's latents (n, L) of images (n, box, box), in batches."""
    model.eval().to(device)
    model.embedding.to(memory_format=memory_format(model, device))  # type: ignore[call-overload]  # torch's stubs omit Module.to(memory_format=)
    out = [
        model.embedding(torch.as_tensor(np.array(batch, dtype=np.float32), device=device)).float().cpu().numpy()
        for batch in batched(images, batch_size)
    ]
    return np.concatenate(out) if out else np.zeros((0, model.architecture["latent_dim"]), np.float32)


def batched(array, batch_size: int):
    """Yield consecutive slices of ``array`` of at most ``batch_size``."""
    for part in chunks(len(array), batch_size):
        yield array[part]


# Posterior columns added to the particles' STAR file (RELION-style names, unit in the name).
STAR_COLUMNS = {
    "cryoflowThetaMeanAngst": "mean",
    "cryoflowThetaStdAngst": "std",
    "cryoflowThetaQ05Angst": "q05",
    "cryoflowThetaQ50Angst": "q50",
    "cryoflowThetaQ95Angst": "q95",
    "cryoflowThetaMapAngst": "map",
    "cryoflowThetaEdgeMass": "edge_mass",
}


PARTICLE_COLUMN = "cryoflowParticleProbability"


def star_columns(summary: PosteriorSummary, theta_dim: int) -> dict[str, np.ndarray]:
    """The STAR columns of a posterior summary: ``STAR_COLUMNS`` for 1-D θ; for 2-D θ one column per
    coordinate (``cryoflowTheta1MeanAngst``, ``cryoflowTheta2MeanAngst``, …) and one edge mass."""
    out = {}
    values = cast(dict[str, np.ndarray], summary)  # read by the column's key
    for column, key in STAR_COLUMNS.items():
        value = np.asarray(values[key])
        if theta_dim == 1 or value.ndim == 1:
            out[column] = value
        else:
            for d in range(theta_dim):
                out[column.replace("cryoflowTheta", f"cryoflowTheta{d + 1}", 1)] = value[:, d]
    if "p_particle" in summary:  # junk-aware models: the probability that the image holds a centred particle
        out[PARTICLE_COLUMN] = np.asarray(summary["p_particle"])
    return out


# keys of a shard's npz that are the same in every shard, and keys with one entry per shard
SHARED_KEYS = ("theta_grid_range_A",)
PER_SHARD_KEYS = {"seconds": "shard_seconds", "device": "shard_device"}


def concatenate_npz(paths: list, output) -> int:
    """Join per-shard npz archives along the particle axis, one shard's array in memory at a time.

    ``SHARED_KEYS`` are taken from the first shard; ``PER_SHARD_KEYS`` are
    renamed and keep one entry per shard (as does ``shard_particles``);
    every other array is concatenated. Returns the number of particles.
    """
    counts = []
    with NpzWriter(output) as writer:
        for path in paths:
            with np.load(path, allow_pickle=False) as shard:
                counts.append(len(shard["mean"]))
                for key in shard.files:
                    if key not in SHARED_KEYS:
                        value = shard[key]
                        if value.dtype.kind == "U":  # e.g. devices: 'cpu' in one shard, 'cuda:0' in another
                            value = value.astype("<U64")
                        writer.append(**{PER_SHARD_KEYS.get(key, key): value})
                shared = {key: shard[key] for key in SHARED_KEYS if key in shard.files}
        writer.close(shard_particles=np.array(counts, dtype=np.int64), **shared)
    return int(sum(counts))
