"""Equal-volume cells of SO(3): a regular grid in the ZYZ Euler angles (α, cos β, γ), in which the Haar
measure is uniform, their rotation matrices and their eight sub-cells (the explicit likelihood's orientation grid
and its local refinement)."""

from __future__ import annotations

import math

import torch


def euler_matrices(cells: torch.Tensor) -> torch.Tensor:
    """Rotations (C, 3, 3) R = R_z(α) R_y(β) R_z(γ) at cells (C, 3) = (α, cos β, γ)."""
    alpha, u, gamma = cells.unbind(-1)
    beta = torch.arccos(u.clamp(-1.0, 1.0))

    def about_z(angle):
        c, s = torch.cos(angle), torch.sin(angle)
        zero, one = torch.zeros_like(c), torch.ones_like(c)
        return torch.stack([c, -s, zero, s, c, zero, zero, zero, one], -1).reshape(-1, 3, 3)

    c, s = torch.cos(beta), torch.sin(beta)
    zero, one = torch.zeros_like(c), torch.ones_like(c)
    about_y = torch.stack([c, zero, s, zero, one, zero, -s, zero, c], -1).reshape(-1, 3, 3)
    return about_z(alpha) @ about_y @ about_z(gamma)


def so3_cells(n_alpha: int, n_u: int, n_gamma: int, dtype=torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """Centres (C, 3) of n_α·n_u·n_γ equal-volume SO(3) cells and the cell widths (3,) in (α, cos β, γ)."""
    width = torch.tensor([2 * math.pi / n_alpha, 2.0 / n_u, 2 * math.pi / n_gamma], dtype=dtype)
    axes = [
        (torch.arange(n, dtype=dtype) + 0.5) * w + lo
        for n, w, lo in zip((n_alpha, n_u, n_gamma), width, (0.0, -1.0, 0.0))
    ]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3), width


def children(centres: torch.Tensor, widths: torch.Tensor) -> torch.Tensor:
    """Centres (C·8, 3) of the eight equal sub-cells of each cell (C, 3) of widths (C, 3)."""
    signs = torch.tensor(
        [[a, b, c] for a in (-1, 1) for b in (-1, 1) for c in (-1, 1)], dtype=centres.dtype, device=centres.device
    )
    return (centres[:, None, :] + 0.25 * signs[None] * widths[:, None, :]).reshape(-1, 3)
