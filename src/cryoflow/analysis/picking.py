"""Amortized template matching on whole micrographs (the paper's Fig. 5): windows → posteriors → maps, picks.

A micrograph is Fourier-resampled as a whole to the training pixel size,
its noise power spectrum is measured on box-sized tiles (the median over
tiles, so particles and junk weigh little), and windows of the training box
centred every ``stride_px`` training pixels are whitened by it and
normalized like particles, then evaluated by the same network in batches.
Each window centre gets the posterior mean and σ of θ, the edge mass, the
atypicality of its latent among held-out simulations (a k-NN p-value), and,
for a junk-aware model, p_particle. Maps of these are MRC files whose
pixel is the stride and whose origin is the first window's centre.

Candidates are local maxima of a score at least ``min_distance_A`` apart
and above a threshold (``cryoflow.analysis.candidates``).
"""

from __future__ import annotations

import time

import numpy as np
import torch

from cryoflow.analysis.candidates import score_kind, window_score
from cryoflow.analysis.predictive import LatentReference
from cryoflow.chunks import chunks
from cryoflow.physics import preprocess, whitening
from cryoflow.sbi import inference


def resample_micrograph(image: np.ndarray, pixel_in_A: float, pixel_out_A: float) -> tuple[np.ndarray, float]:
    """A (ny, nx) image Fourier-cropped (or padded) to about ``pixel_out_A``; returns it and its pixel size.

    The new shape is each side · p_in / p_out rounded to an even number, so the pixel size reached
    (ny · p_in / ny') is within 1 / ny' of the target (0.05 % for a 4k micrograph); values keep their
    meaning, as ``preprocess.fourier_crop`` scales them.
    """
    ny, nx = image.shape
    ratio = pixel_in_A / pixel_out_A
    my, mx = (max(2, 2 * int(round(n * ratio / 2))) for n in (ny, nx))
    if (my, mx) == (ny, nx):
        return np.asarray(image, np.float32), pixel_in_A
    spectrum = torch.fft.rfft2(torch.as_tensor(np.asarray(image, np.float32)))
    out = torch.fft.irfft2(preprocess.resize_spectrum(spectrum, (ny, nx), (my, mx)), s=(my, mx)) * (my * mx) / (ny * nx)
    return out.numpy(), ny * pixel_in_A / my


def tile_noise_power(image: np.ndarray, box: int) -> np.ndarray:
    """Radial noise power (as ``whitening.radial_power``) of a micrograph: the median over its
    non-overlapping box × box tiles, each mean-subtracted, so the few tiles with particles or junk weigh little."""
    ny, nx = image.shape
    grid = image[: ny // box * box, : nx // box * box].reshape(ny // box, box, nx // box, box).swapaxes(1, 2)
    tiles = grid.reshape(-1, box, box)
    tiles = tiles - tiles.mean(axis=(-2, -1), keepdims=True)
    radius = whitening.radial_index(box)
    counts = np.bincount(radius.ravel())
    per_tile = np.stack([np.bincount(radius.ravel(), p.ravel()) / counts for p in np.abs(np.fft.rfft2(tiles)) ** 2])
    return np.median(per_tile, axis=0)


def window_grid(shape: tuple[int, int], box: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-left corners (rows, columns) of box × box windows every ``stride`` pixels that fit in ``shape``."""
    rows = np.arange(0, shape[0] - box + 1, stride)
    cols = np.arange(0, shape[1] - box + 1, stride)
    return rows, cols


def windows(image: np.ndarray, box: int, stride: int) -> np.ndarray:
    """All windows (n_rows, n_cols, box, box) as a read-only strided view (no copy)."""
    view = np.lib.stride_tricks.sliding_window_view(image, (box, box))
    return view[::stride, ::stride]


def window_batches(
    image: np.ndarray, box: int, stride: int, noise_power: np.ndarray | None, batch_size: int, limit: int | None = None
):
    """Windows in row-major batches, whitened (unless ``noise_power`` is None) and normalized like particles.

    Only one batch of windows is ever copied out of the strided view (all of a 4k micrograph's windows
    at 128 px would be tens of GiB); ``limit`` stops after that many windows.
    """
    view = windows(image, box, stride)
    n_cols = view.shape[1]
    total = view.shape[0] * n_cols if limit is None else min(limit, view.shape[0] * n_cols)
    for part in chunks(total, batch_size):
        flat = np.arange(part.start, part.stop)
        batch = np.ascontiguousarray(view[flat // n_cols, flat % n_cols], dtype=np.float32)
        if noise_power is not None:
            batch = whitening.whiten(batch, noise_power)
        yield whitening.normalize(batch)


MAP_KEYS = ("theta_mean", "theta_std", "edge_mass", "atypicality_p", "score")


def window_posteriors(model, windows, n: int, reference: LatentReference, options: dict, seed, device, label, ctf):
    """Per window, in order: posterior mean, σ, edge mass, atypicality p-value (and p(particle)), as lists of
    the batches' arrays."""
    parts: dict[str, list] = {}
    for summary in inference.posterior_stream(
        model,
        windows,
        n,
        grid_points=options["grid_points"],
        grid_points_2d=options["grid_points_2d"],
        n_samples=1,
        seed=seed,
        device=device,
        label=label,
        ctf=ctf,
    ):
        parts.setdefault("theta_mean", []).append(summary["mean"])
        parts.setdefault("theta_std", []).append(summary["std"])
        parts.setdefault("edge_mass", []).append(summary["edge_mass"])
        parts.setdefault("atypicality_p", []).append(reference.pvalues(summary["latent"]))
        if "p_particle" in summary:
            parts.setdefault("p_particle", []).append(summary["p_particle"])
    return parts


def evaluate_micrograph(
    model,
    image: np.ndarray,
    pixel_A: float,
    train_pixel_A: float,
    box: int,
    stride: int,
    reference: LatentReference,
    options: dict,
    device="cpu",
    whiten: bool = True,
    seed: int = 0,
    label: str = "micrograph",
    ctf: dict | None = None,
) -> dict:
    """Posterior maps of one micrograph: resample, measure the noise, slide windows, run the network.

    ``ctf`` (``micrograph_ctf``): the micrograph's CTF, which every window shares (CTF-conditioned models).

    Returns maps (n_rows, n_cols) for ``MAP_KEYS`` (+ ``p_particle`` for junk-aware models), the
    realized pixel size, the map's pixel and origin in Å (micrograph frame) and timing.
    """
    start = time.perf_counter()
    resampled, pixel = resample_micrograph(image, pixel_A, train_pixel_A)
    resampled = resampled - resampled.mean()
    noise_power = tile_noise_power(resampled, box) if whiten else None
    rows, cols = window_grid(resampled.shape, box, stride)
    n = len(rows) * len(cols)
    windows = window_batches(resampled, box, stride, noise_power, options["batch_size"])
    window_ctf = None if ctf is None else {k: np.full(n, v) for k, v in ctf.items()}
    parts = window_posteriors(model, windows, n, reference, options, seed, device, label, window_ctf)
    shape = (len(rows), len(cols))
    maps = {key: np.concatenate(value).reshape(shape + np.shape(value[0])[1:]) for key, value in parts.items()}
    low_high = np.asarray(model.architecture["theta_range_A"], float).reshape(-1, 2)
    kind = score_kind(options["score"], model.particle is not None)
    maps["score"] = window_score(maps, kind, low_high, options["typical_p"])
    return {
        "maps": maps,
        "resampled": resampled,
        "noise_power": noise_power,
        "pixel_size_A": pixel,
        "map_pixel_A": stride * pixel,
        "origin_A": (box // 2 * pixel, box // 2 * pixel),  # (x, y) of map pixel (0, 0) in the micrograph
        "shape_resampled": resampled.shape,
        "n_windows": n,
        "seconds": time.perf_counter() - start,
    }


def micrograph_ctf(micrograph) -> dict[str, float]:
    """A ``micrographs.Micrograph``'s CTF in the simulator's keys."""
    return {
        "defocus_u_A": micrograph.defocus_u_A,
        "defocus_v_A": micrograph.defocus_v_A,
        "phase_shift_deg": micrograph.phase_shift_deg,
    }


@torch.no_grad()
def example_windows(
    model, result: dict, cells, box: int, stride: int, grid_points: int, device="cpu", ctf: dict | None = None
) -> dict:
    """The windows at map pixels ``cells`` [(row, col)] as the network saw them, with their posterior mass
    on the θ grid (1-D θ): for the figure."""
    view = windows(result["resampled"], box, stride)
    images = np.stack([np.asarray(view[r, c], np.float32) for r, c in cells]) if cells else np.zeros((0, box, box))
    if len(images) and result["noise_power"] is not None:
        images = whitening.whiten(images, result["noise_power"])
    images = whitening.normalize(images) if len(images) else images.astype(np.float32)
    out = {"images": images, "cells": np.asarray(cells, dtype=int).reshape(-1, 2)}
    if model.theta_dim == 1 and len(images):
        axes, grid = inference.posterior_grid(model.architecture["theta_range_A"], grid_points, 8)
        model.eval().to(device)
        latent = model.embedding(torch.as_tensor(images, device=device))
        features = None if ctf is None else model.ctf_features({k: np.full(len(images), v) for k, v in ctf.items()})
        log_density = model.log_prob_grid(
            latent, torch.as_tensor(grid, dtype=torch.float32, device=device), ctf=features
        )
        out.update(theta_grid_A=grid, mass=inference.normalized_mass(log_density.double().cpu().numpy()))
    return out
