"""Per-particle posteriors: embed images, evaluate q(θ | image) on a fine θ grid.

For a 1-D θ the posterior density restricted to the prior range is evaluated
exactly on ``grid_points`` cells; mean, standard deviation, quantiles and MAP
come from that discretized density, and samples are drawn by inverse CDF.
"""

from __future__ import annotations

import numpy as np
import torch

from cryoflow.diagnostics import edge_mass
from cryoflow.fileio import NpzWriter
from cryoflow.logs import Progress
from cryoflow.models import PosteriorEstimator

QUANTILES = (0.05, 0.5, 0.95)


def theta_grid(theta_range_A, grid_points: int) -> np.ndarray:
    """Cell centres of ``grid_points`` equal cells spanning the prior range."""
    low, high = theta_range_A
    width = (high - low) / grid_points
    return low + width * (np.arange(grid_points) + 0.5)


def summarize_grid_posterior(
    log_density: np.ndarray, grid: np.ndarray, n_samples: int, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Mean, std, quantiles, MAP and inverse-CDF samples from log densities (B, G) on cell centres."""
    width = grid[1] - grid[0]
    log_density = log_density - log_density.max(axis=1, keepdims=True)
    mass = np.exp(log_density)
    mass /= mass.sum(axis=1, keepdims=True)
    mean = mass @ grid
    std = np.sqrt(np.maximum(mass @ grid**2 - mean**2, 0.0))
    cdf = np.concatenate([np.zeros((len(mass), 1)), np.cumsum(mass, axis=1)], axis=1)
    cdf[:, -1] = 1.0
    edges = np.concatenate([grid - 0.5 * width, [grid[-1] + 0.5 * width]])
    out = {"mean": mean, "std": std, "map": grid[np.argmax(mass, axis=1)], "edge_mass": edge_mass(mass, grid)}
    for q in QUANTILES:
        out[f"q{int(round(q * 100)):02d}"] = np.array([np.interp(q, c, edges) for c in cdf])
    uniforms = rng.random((len(mass), n_samples))
    out["samples"] = np.stack([np.interp(u, c, edges) for u, c in zip(uniforms, cdf)]).astype(np.float32)
    return out


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
):
    """Yield posterior summaries and latents batch by batch for the images of ``image_batches``.

    Nothing is kept between batches, so memory does not grow with the
    number of particles; progress (particles/s, ETA) goes to the log.
    """
    model.eval().to(device)
    model.embedding.to(memory_format=torch.channels_last)  # faster convolutions on CPU and GPU alike
    grid = theta_grid(model.architecture["theta_range_A"], grid_points)
    grid_t = torch.as_tensor(grid, dtype=torch.float32, device=device)
    rng = np.random.default_rng(seed)
    progress = Progress(n_images, label, unit="particles")
    for batch in image_batches:
        images = torch.as_tensor(np.array(batch, dtype=np.float32), device=device)  # a writable copy
        latent = model.embedding(images)
        log_density = model.log_prob_grid(latent, grid_t).double().cpu().numpy()
        summary = summarize_grid_posterior(log_density, grid, n_samples, rng)
        summary["latent"] = latent.float().cpu().numpy()
        progress.update(len(images))
        yield summary


def posterior_batches(model: PosteriorEstimator, image_batches, n_images: int, **options) -> dict[str, np.ndarray]:
    """All of ``posterior_stream`` concatenated: for held-out simulations and other small sets."""
    parts: dict[str, list] = {}
    for summary in posterior_stream(model, image_batches, n_images, **options):
        for key, value in summary.items():
            parts.setdefault(key, []).append(value)
    if not parts:
        raise ValueError("no images to run inference on")
    return {key: np.concatenate(value) for key, value in parts.items()}


def batched(array, batch_size: int):
    """Yield consecutive slices of ``array`` of at most ``batch_size``."""
    for start in range(0, len(array), batch_size):
        yield array[start : start + batch_size]


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
