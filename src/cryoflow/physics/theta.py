"""Conventions for the conformational coordinate θ (Å), one- or two-dimensional.

A 1-D θ is an array (n,) and its prior range a pair [low, high]; a 2-D θ
(two normal modes varied jointly) is an array (n, 2) and its range a pair of
pairs [[low₁, high₁], [low₂, high₂]]. Every stage goes through these helpers,
so 1-D files, model cards and STAR columns keep their original form.
"""

from __future__ import annotations

import numpy as np


def bounds(theta_range_A) -> np.ndarray:
    """The prior range as a (D, 2) array of [low, high] rows, D = 1 or 2."""
    values = np.asarray(theta_range_A, dtype=np.float64)
    values = values.reshape(1, 2) if values.shape == (2,) else values
    if values.ndim != 2 or values.shape[1] != 2 or len(values) not in (1, 2) or np.any(values[:, 1] <= values[:, 0]):
        raise ValueError(f"θ range must be [low, high] or two such pairs with low < high, got {theta_range_A!r}")
    return values


def dims(theta_range_A) -> int:
    """1 or 2: the number of θ coordinates of a prior range."""
    return len(bounds(theta_range_A))


def range_of(theta_A: np.ndarray) -> list:
    """The prior range spanned by template θ values (T,) or (T, 2), as plain floats in the range format."""
    theta_A = np.asarray(theta_A, dtype=np.float64)
    if theta_A.ndim == 1:
        return [float(theta_A.min()), float(theta_A.max())]
    return [[float(lo), float(hi)] for lo, hi in zip(theta_A.min(axis=0), theta_A.max(axis=0))]


def columns(values: np.ndarray, n_dims: int) -> list[np.ndarray]:
    """One array per θ coordinate: ``values`` itself for 1-D, its last-axis slices for 2-D."""
    values = np.asarray(values)
    return [values] if n_dims == 1 else [values[..., d] for d in range(n_dims)]


def reference_index(theta_A: np.ndarray) -> int:
    """Index of the template closest to θ = 0 (the reference)."""
    theta_A = np.asarray(theta_A, dtype=np.float64)
    return int(np.argmin(np.abs(theta_A) if theta_A.ndim == 1 else np.linalg.norm(theta_A, axis=1)))


def label(d: int, n_dims: int) -> str:
    """'θ' for 1-D, 'θ₁' / 'θ₂' for 2-D (axis and legend labels)."""
    return "θ" if n_dims == 1 else "θ" + "₁₂"[d]


def suffix(d: int, n_dims: int) -> str:
    """'' for 1-D, '_theta1' / '_theta2' for 2-D (summary keys)."""
    return "" if n_dims == 1 else f"_theta{d + 1}"


def true_theta_columns(theta: np.ndarray) -> dict[str, np.ndarray]:
    """STAR columns of the true θ: ``cryoflowTrueThetaAngst``, or ``cryoflowTrueTheta1Angst`` and ``…2…``."""
    if theta.ndim == 1:
        return {"cryoflowTrueThetaAngst": theta}
    return {f"cryoflowTrueTheta{d + 1}Angst": theta[:, d] for d in range(theta.shape[1])}


def true_theta(table) -> np.ndarray | None:
    """The true θ (n,) or (n, 2) of a demo STAR table, None for real data."""
    if "cryoflowTrueThetaAngst" in table:
        return table["cryoflowTrueThetaAngst"].to_numpy(float)
    if "cryoflowTrueTheta1Angst" in table:
        return table[["cryoflowTrueTheta1Angst", "cryoflowTrueTheta2Angst"]].to_numpy(float)
    return None
