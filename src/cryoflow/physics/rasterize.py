"""Atomic models to 3-D density maps (MRC) on a grid that overlays the model.

Each bead is a normalized 3-D Gaussian of width ``sigma_A`` times its electron
count, so the map is a density in electrons/Å³ and integrates (sum × voxel
volume) to the total weight. Voxel ``(i, j, k)`` (x, y, z) sits at
``origin + (i, j, k) * voxel_size_A``; the centre voxel ``box // 2`` sits at
``center_A``.
"""

from __future__ import annotations

from pathlib import Path

import mrcfile
import numpy as np

from cryoflow.chunks import chunks
from cryoflow.errors import InputError
from cryoflow.io.fileio import atomic_path


def grid_origin_A(center_A: np.ndarray, voxel_size_A: float, box_vox: int) -> np.ndarray:
    """Position (x, y, z) in Å of voxel (0, 0, 0) for a grid centred on ``center_A``."""
    return np.asarray(center_A, dtype=np.float64) - (box_vox // 2) * voxel_size_A


def rasterize_gaussians(
    coords_A: np.ndarray,
    weights: np.ndarray,
    sigma_A: float,
    voxel_size_A: float,
    box_vox: int,
    center_A: np.ndarray,
    chunk: int = 128,
) -> np.ndarray:
    """Density map (z, y, x) in electrons/Å³ of Gaussian beads, sampled at voxel centres."""
    coords_A = np.asarray(coords_A, dtype=np.float64)
    weights = np.asarray(weights, dtype=np.float64)
    axis = grid_origin_A(center_A, voxel_size_A, box_vox)[None, :] + voxel_size_A * np.arange(box_vox)[:, None]
    norm = (2.0 * np.pi * sigma_A**2) ** -1.5
    density = np.zeros((box_vox,) * 3)
    for part in chunks(len(coords_A), chunk):
        xyz = coords_A[part]
        # (n, box) one-dimensional Gaussian factors along x, y, z
        g = [np.exp(-((axis[None, :, d] - xyz[:, d, None]) ** 2) / (2.0 * sigma_A**2)) for d in range(3)]
        gz = g[2] * (weights[part, None] * norm)
        density += np.einsum("nz,ny,nx->zyx", gz, g[1], g[0], optimize=True)
    return density


def write_mrc(path: str | Path, density_zyx: np.ndarray, voxel_size_A: float, origin_A: np.ndarray) -> None:
    """Write a float32 MRC map with voxel size and origin set (ChimeraX places it on the model)."""
    with atomic_path(path) as tmp:
        with mrcfile.new(tmp, overwrite=True) as mrc:
            mrc.set_data(np.ascontiguousarray(density_zyx, dtype=np.float32))
            mrc.voxel_size = voxel_size_A
            mrc.header.origin = tuple(float(v) for v in origin_A)
            mrc.header.nxstart, mrc.header.nystart, mrc.header.nzstart = 0, 0, 0
            mrc.update_header_stats()


def read_map(path: str | Path) -> tuple[np.ndarray, float]:
    """A cubic MRC map (z, y, x) as float32 and its voxel size in Å, read leniently."""
    try:
        with mrcfile.open(path, permissive=True) as mrc:
            data = np.asarray(mrc.data, dtype=np.float32).copy()
            voxel = float(mrc.voxel_size.x)
    except (OSError, ValueError) as err:
        raise InputError(f"{path}: not a readable MRC map: {err}") from err
    if data.ndim != 3 or len(set(data.shape)) != 1:
        raise InputError(f"{path}: map shape {data.shape} is not a cube (nz = ny = nx)")
    if not voxel > 0:
        raise InputError(f"{path}: voxel size {voxel} in the header is not positive")
    if not np.all(np.isfinite(data)):
        raise InputError(f"{path}: map contains NaN or inf")
    return data, voxel


def map_bead_sigma_A(bead_sigma_A) -> float:
    """The bead width template maps are rasterized with: the value, or the low end of a range (wider
    beads are reached per image by extra blur, ``VolumeTemplates.spectrum``)."""
    return float(bead_sigma_A) if isinstance(bead_sigma_A, (int, float)) else float(min(bead_sigma_A))
