"""The shift × nuisance cells an image's explicit likelihood sums over (``cryoflow.likelihood.exact``), and their
local refinement: a cell is split into its two halves along each dimension it spans (shift y, shift x,
defocus), its weight shared among them."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import torch

from cryoflow.physics.ctf import CTF


@dataclass
class Rows:
    """The shift × nuisance cells an image's likelihood sums over: each one's nuisance state (``cell``, an
    index into the image's nuisance states), shift (Å), log weight, and half-widths (shift y, shift x, defocus;
    0 where that value is not summed over a range)."""

    cell: torch.Tensor  # (R,) long
    shift_A: torch.Tensor  # (R, 2) float32
    log_w: torch.Tensor  # (R,) float64
    half_width: torch.Tensor  # (R, 3) float64


@dataclasses.dataclass(frozen=True)
class NuisanceCell:
    """One nuisance state of the explicit likelihood's grid: its CTF (with the B-factor), bead width, and the
    half-width of the defocus cell it stands for (0 where the defocus is known or fixed)."""

    ctf: CTF
    bead_sigma_A: float
    defocus_half_width_A: float

    def defocus_child(self, offset_A: float) -> NuisanceCell:
        """The half of this cell whose defocus is ``offset_A`` away (U and V alike)."""
        shifted = dataclasses.replace(
            self.ctf, defocus_u_A=self.ctf.defocus_u_A + offset_A, defocus_v_A=self.ctf.defocus_v_A + offset_A
        )
        return NuisanceCell(shifted, self.bead_sigma_A, 0.5 * self.defocus_half_width_A)


def split_rows(rows: Rows, chosen: torch.Tensor, cells: list[NuisanceCell]) -> tuple[Rows, list[NuisanceCell]]:
    """``rows`` with the ``chosen`` ones replaced by their children: shift halves along each axis with a
    width, defocus halves where the defocus has one (new nuisance states appended to ``cells``)."""
    keep = torch.ones(len(rows.cell), dtype=torch.bool)
    keep[chosen] = False
    parts = {
        "cell": [rows.cell[keep]],
        "shift_A": [rows.shift_A[keep]],
        "log_w": [rows.log_w[keep]],
        "half_width": [rows.half_width[keep]],
    }
    for r in chosen.tolist():
        hy, hx, hd = rows.half_width[r].tolist()
        ys = [-0.5 * hy, 0.5 * hy] if hy > 0 else [0.0]
        xs = [-0.5 * hx, 0.5 * hx] if hx > 0 else [0.0]
        ds = [-0.5 * hd, 0.5 * hd] if hd > 0 else [0.0]
        parent = cells[int(rows.cell[r])]
        kid_cells = []
        for offset in ds:
            if offset == 0.0:
                kid_cells.append(int(rows.cell[r]))
                continue
            cells.append(parent.defocus_child(offset))
            kid_cells.append(len(cells) - 1)
        n = len(ys) * len(xs) * len(ds)
        for cell in kid_cells:
            for dy in ys:
                for dx in xs:
                    parts["cell"].append(torch.tensor([cell]))
                    parts["shift_A"].append(rows.shift_A[r : r + 1] + torch.tensor([[dy, dx]]))
                    parts["log_w"].append(rows.log_w[r : r + 1] - math.log(n))
                    parts["half_width"].append(torch.tensor([[0.5 * hy, 0.5 * hx, 0.5 * hd]], dtype=torch.float64))
    return Rows(**{key: torch.cat(value) for key, value in parts.items()}), cells


def heaviest_rows(per_row: torch.Tensor, rows: Rows, n_templates: int, top: int) -> torch.Tensor:
    """The shift × defocus rows to split: the union over templates of the ``top`` rows holding most of each
    template's mass (``per_row`` (R, T·A): each row's weighted log-likelihood per template-major column), those
    with nothing left to split excepted. Each template's own best shifts and defoci are refined, not only the
    image's overall best, which a light template's may not share."""
    mass = torch.logsumexp(per_row.reshape(len(per_row), n_templates, -1), dim=2).cpu() + rows.log_w[:, None]
    mass[(rows.half_width == 0).all(dim=1)] = -math.inf  # nothing to split
    top = min(top, int(torch.isfinite(mass[:, 0]).sum()))
    return torch.unique(torch.topk(mass, top, dim=0).indices)


def midpoints(low: float, high: float, n: int) -> np.ndarray:
    """``n`` midpoints of equal cells of [low, high] (one point where low == high)."""
    if high <= low or n <= 1:
        return np.array([0.5 * (low + high)])
    return low + (high - low) * (np.arange(n) + 0.5) / n
