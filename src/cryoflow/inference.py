"""Per-particle posteriors: embed images, evaluate q(θ | image) on a fine θ grid.

For a 1-D θ the posterior density restricted to the prior range is evaluated
exactly on ``grid_points`` cells; mean, standard deviation, quantiles and MAP
come from that discretized density, and samples are drawn by inverse CDF.
"""

from __future__ import annotations

import zipfile

import numpy as np
import torch

from cryoflow.fileio import atomic_path
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
    out = {"mean": mean, "std": std, "map": grid[np.argmax(mass, axis=1)]}
    for q in QUANTILES:
        out[f"q{int(round(q * 100)):02d}"] = np.array([np.interp(q, c, edges) for c in cdf])
    uniforms = rng.random((len(mass), n_samples))
    out["samples"] = np.stack([np.interp(u, c, edges) for u, c in zip(uniforms, cdf)]).astype(np.float32)
    return out


@torch.no_grad()
def posterior_batches(
    model: PosteriorEstimator,
    image_batches,
    n_images: int,
    grid_points: int = 512,
    n_samples: int = 100,
    seed: int = 0,
    device="cpu",
    label: str = "infer",
) -> dict[str, np.ndarray]:
    """Posterior summaries and latents for every image yielded by ``image_batches`` (numpy (b, box, box))."""
    model.eval().to(device)
    grid = theta_grid(model.architecture["theta_range_A"], grid_points)
    grid_t = torch.as_tensor(grid, dtype=torch.float32, device=device)
    rng = np.random.default_rng(seed)
    parts: dict[str, list] = {}
    progress = Progress(n_images, label, unit="particles")
    for batch in image_batches:
        images = torch.as_tensor(np.asarray(batch), dtype=torch.float32, device=device)
        latent = model.embedding(images)
        log_density = model.log_prob_grid(latent, grid_t).double().cpu().numpy()
        summary = summarize_grid_posterior(log_density, grid, n_samples, rng)
        summary["latent"] = latent.cpu().numpy().astype(np.float32)
        for key, value in summary.items():
            parts.setdefault(key, []).append(value)
        progress.update(len(images))
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
}


# keys of a shard's npz that are the same in every shard, and keys with one entry per shard
SHARED_KEYS = ("theta_grid_range_A",)
PER_SHARD_KEYS = {"seconds": "shard_seconds", "device": "shard_device"}


def npy_header(archive: zipfile.ZipFile, key: str) -> tuple[tuple, np.dtype]:
    """Shape and dtype of one array of an npz archive, read from its header only."""
    with archive.open(key + ".npy") as handle:
        version = np.lib.format.read_magic(handle)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read(handle)
    if fortran and len(shape) > 1:
        raise ValueError(f"{archive.filename}: {key} is stored in Fortran order")
    return shape, dtype


def concatenate_npz(paths: list, output) -> int:
    """Join per-shard npz archives along the particle axis, streaming one shard's array at a time.

    ``SHARED_KEYS`` are taken from the first shard; ``PER_SHARD_KEYS`` are
    renamed and keep one entry per shard (as does ``shard_particles``);
    every other array is concatenated. Returns the number of particles.
    """
    archives = [zipfile.ZipFile(p) for p in paths]
    try:
        keys = [name[: -len(".npy")] for name in archives[0].namelist()]
        headers = {key: [npy_header(a, key) for a in archives] for key in keys}
        counts = [shape[0] for shape, _ in headers["mean"]]
        with atomic_path(output) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED, allowZip64=True) as out:
            for key in keys:
                if key in SHARED_KEYS:
                    with archives[0].open(key + ".npy") as src, out.open(key + ".npy", "w", force_zip64=True) as dst:
                        dst.write(src.read())
                    continue
                shapes = [shape for shape, _ in headers[key]]
                dtype = np.result_type(*[dtype for _, dtype in headers[key]])
                shape = (sum(s[0] for s in shapes),) + tuple(shapes[0][1:])
                name = PER_SHARD_KEYS.get(key, key) + ".npy"
                with out.open(name, "w", force_zip64=True) as dst:
                    header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape}
                    np.lib.format.write_array_header_2_0(dst, header)
                    for path, archive in zip(paths, archives):
                        with archive.open(key + ".npy") as src:
                            part = np.lib.format.read_array(src, allow_pickle=False)
                        if part.shape[1:] != shape[1:]:
                            raise ValueError(f"{path}: {key} has shape {part.shape}, other shards {shape}")
                        dst.write(np.ascontiguousarray(part, dtype=dtype).tobytes())
            with out.open("shard_particles.npy", "w") as dst:
                np.lib.format.write_array(dst, np.array(counts, dtype=np.int64))
    finally:
        for archive in archives:
            archive.close()
    return int(sum(counts))
