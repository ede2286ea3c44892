"""Explicit-likelihood reference posterior of θ, marginalized the way BioEM does it.

The image model is the simulator's (``cryoflow.physics.simulator``): an image I of n
pixels is N·P + μ + ε, with P the CTF-modulated projection of a template in
some pose, shift and nuisance state, N a normalization, μ an offset and ε
white Gaussian noise of unknown σ (coloured noise is whitened first, images
and projections alike). With flat priors on N and μ and a Jeffreys prior
dσ/σ (Cossio & Hummer, J. Struct. Biol. 2013), the three integrate out in
closed form (``log_evidence``):

    p(I | P) = ½ Γ((n−2)/2) (2π)^(1−n/2) (n S_cc)^(−½) (R/2)^(−(n−2)/2),
    R = S_oo − S_oc² / S_cc,

with S the centred sums of squares and cross products of I and P.

The remaining nuisances are summed numerically, uniformly weighted over
their priors (all priors are uniform), and log-sum-exp'd:

* in-plane shifts: a midpoint grid over the shift prior's square; the cross
  term of every shift at once is one matrix product of the image's
  phase-shifted, CTF-filtered spectrum with the templates' spectra
  (circular shifts, as the simulator makes them, leave S_cc unchanged);
* orientations: equal-volume cells of SO(3), a regular grid in the ZYZ Euler
  angles (α, cos β, γ), in which the Haar measure is uniform, evaluated at
  their centres; the cells that hold most of any template's mass are split
  into their eight children ``refine_levels`` times, per image;
* defocus, B-factor and bead width: a midpoint grid over each prior, or the
  values an image was simulated with, or those its STAR row gives
  (``known``).
* then, per image, the shift × defocus cells that hold most of each
  template's mass are split into halves along each dimension they span,
  ``nuisance_refine_levels`` times (``cryoflow.likelihood.rows``), before
  the orientation refinement runs on them.

The templates' projections on the coarse orientation grid are computed once
and reused for every image; the refined cells' projections are per image.
The posterior over θ is the template likelihood times the uniform prior,
its log interpolated linearly onto the estimator's θ grid.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import torch

from cryoflow.chunks import chunks
from cryoflow.likelihood import gridsize
from cryoflow.likelihood.rows import NuisanceCell, Rows, heaviest_rows, midpoints, split_rows
from cryoflow.logs import Progress
from cryoflow.physics.ctf import CTF, RECORDED_CTF, ctf, fourier_frequencies
from cryoflow.physics.projection import VolumeTemplates, shift_phase
from cryoflow.physics.simulator import Simulator
from cryoflow.physics.so3 import children, euler_matrices, so3_cells
from cryoflow.physics.theta import bounds

LOG_8 = math.log(8.0)
KNOWABLE = ("ctf", "b_factor", "bead_sigma")


class LikelihoodError(ValueError):
    """A likelihood request that cannot be evaluated (names the setting)."""


def log_evidence(sum_ip, sum_i, sum_ii, sum_p, sum_pp, n: int):
    """log p(I | P) with N, μ (flat) and σ (dσ/σ) integrated out; the sums broadcast (float64 advised).

    Over the ``n`` pixels of image I and projection P: ``sum_ip`` = Σ I·P, ``sum_i`` = Σ I, ``sum_ii`` = Σ I²,
    ``sum_p`` = Σ P, ``sum_pp`` = Σ P² (BioEM's Coc, Co, Coo, Cc, Ccc).
    """
    image_var = sum_ii - sum_i * sum_i / n  # n × the variances and the covariance
    projection_var = sum_pp - sum_p * sum_p / n
    covariance = sum_ip - sum_i * sum_p / n
    residual = image_var - covariance * covariance / projection_var
    residual = torch.clamp(residual, min=1e-12) if isinstance(residual, torch.Tensor) else max(residual, 1e-12)
    log = torch.log if isinstance(residual, torch.Tensor) else np.log
    half = 0.5 * (n - 2)
    constant = (1.0 - 0.5 * n) * math.log(2 * math.pi) + math.log(0.5) + math.lgamma(half)
    return constant - 0.5 * log(n * projection_var) - half * log(0.5 * residual)


@dataclass
class GridSettings:
    """Sizes of the numerical grids (see the module docstring; the schema's ``likelihood`` block holds the
    defaults, not this class); ``known`` lists the nuisances taken per image (``KNOWABLE``)."""

    orientations: tuple[int, int, int]
    refine_top: int
    refine_levels: int
    shift_points: int
    defocus_points: int
    b_factor_points: int
    bead_sigma_points: int
    max_memory_gb: float
    nuisance_refine_top: int
    nuisance_refine_levels: int
    nuisance_cells: int
    known: tuple[str, ...] = ()


class ExplicitLikelihood:
    """log p(image | template) for every template of a ``Simulator``, marginalized over the nuisances.

    ``rotations`` (R, 3, 3), optional: a discrete orientation set of equal weight that replaces the
    SO(3) grid (no refinement); for images drawn from such a set the sum is then exact.
    """

    def __init__(self, simulator: Simulator, settings: GridSettings, rotations: torch.Tensor | None = None):
        self.sim, self.settings = simulator, settings
        unknown = set(settings.known) - set(KNOWABLE)
        if unknown:
            raise LikelihoodError(f"likelihood.known: {sorted(unknown)} not among {list(KNOWABLE)}")
        p = simulator.priors
        if bounds(p.theta_range_A).shape[0] != 1:
            raise LikelihoodError("the explicit likelihood is implemented for a 1-D θ only (templates.theta_dims: 1)")
        if "ctf" not in settings.known:
            if p.astigmatism_max_A > 0 or p.phase_shift_range_deg[1] > p.phase_shift_range_deg[0]:
                raise LikelihoodError(
                    "likelihood: astigmatism or phase-shift priors can only be used with the CTF "
                    "known (likelihood.nuisance: ctf_known)"
                )
            if len(p.optics) > 1:
                raise LikelihoodError(
                    "likelihood: several optics groups need the CTF known (likelihood.nuisance: ctf_known)"
                )
        self.device = simulator.device
        self.box = simulator.box
        self.n = self.box * self.box
        self.s_y, self.s_x = fourier_frequencies(self.box, simulator.pixel_size_A, device=self.device)
        weight = torch.full((self.box // 2 + 1,), 2.0, device=self.device)
        weight[0] = 1.0
        weight[-1] = 1.0  # even box: the Nyquist column has no mirror either
        self.parseval = (weight[None, :] / self.n).expand(self.box, -1).reshape(-1)  # Σ_x a b = Σ_k w Re(â* b̂)
        self.theta_nodes = simulator.templates.theta_A
        self.n_templates = len(self.theta_nodes)
        if isinstance(simulator.templates, VolumeTemplates):  # maps carry their own bead width
            self.project_sigma, self.blur_base = None, simulator.templates.map_sigma_A
        else:  # beads projected at the prior's narrowest width, wider ones blurred by the filters
            self.project_sigma = self.blur_base = float(p.bead_sigma_range_A[0])
        half = p.shift_max_A
        axis = midpoints(-half, half, settings.shift_points if half > 0 else 1)
        shifts = np.stack(np.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2)
        self.shifts_A = torch.as_tensor(shifts, dtype=torch.float32, device=self.device)
        whitening = simulator.noise_filter
        self.whitening = None if whitening is None else (1.0 / whitening.clamp_min(1e-6)).reshape(-1)
        self.coarse: torch.Tensor | None  # the SO(3) cells' Euler angles, None for given rotations
        self.width: torch.Tensor | None
        if rotations is None:
            self.coarse, self.width = so3_cells(*settings.orientations)
            self.coarse_rotations = euler_matrices(self.coarse).float().to(self.device)
            self.coarse_log_weight = -math.log(len(self.coarse))
        else:
            self.coarse, self.width = None, None
            self.coarse_rotations = torch.as_tensor(rotations, dtype=torch.float32, device=self.device)
            self.coarse_log_weight = -math.log(len(self.coarse_rotations))
        self.check_memory()
        self.coarse_spectra = self.project(self.coarse_rotations)

    # ---- sizes -------------------------------------------------------------------------------------------
    def n_nuisance(self) -> int:
        p = self.sim.priors
        return gridsize.n_nuisance(
            vars(self.settings), self.settings.known, p.defocus_range_A, p.b_factor_range_A2, p.bead_sigma_range_A
        )

    def estimated_bytes(self) -> int:
        """``gridsize.estimated_bytes`` of these grids (an upper bound on the peak, tested)."""
        rows = self.n_nuisance() * len(self.shifts_A)
        templates = self.sim.templates
        oversample = 1 if isinstance(templates, VolumeTemplates) else templates.oversample
        return gridsize.estimated_bytes(
            self.box, self.n_templates, len(self.coarse_rotations), rows, vars(self.settings), oversample
        )

    def check_memory(self) -> None:
        need = self.estimated_bytes() / 2**30
        if need > self.settings.max_memory_gb:
            raise LikelihoodError(
                f"likelihood grids need about {need:.1f} GiB (limit likelihood.max_memory_gb = "
                f"{self.settings.max_memory_gb:g}): fewer orientations (likelihood.orientations) or shift, defocus "
                "or B-factor points"
            )

    # ---- model side ---------------------------------------------------------------------------------------
    def project(self, rotations: torch.Tensor) -> torch.Tensor:
        """Real-stacked spectra (2K, T·R) of every template at zero shift under rotations (R, 3, 3), template-major."""
        t, r = self.n_templates, len(rotations)
        return self.project_pairs(torch.arange(t, device=self.device).repeat_interleave(r), rotations.repeat(t, 1, 1))

    def project_pairs(
        self, template: torch.Tensor, rotations: torch.Tensor, chunk: int = gridsize.PROJECTION_CHUNK
    ) -> torch.Tensor:
        """Real-stacked spectra (2K, P) of templates ``template`` (P,) at zero shift under rotations (P, 3, 3)."""
        theta = self.theta_nodes[template]
        zero = torch.zeros(len(rotations), 2, device=self.device)
        sigma = self.project_sigma
        parts = []
        for part in chunks(len(rotations), chunk):
            spec = self.sim.templates.spectrum(
                theta[part], rotations[part], zero[part], self.box, self.sim.pixel_size_A, sigma
            ).reshape(-1, self.s_x.numel())
            if self.whitening is not None:
                spec = spec * self.whitening
            parts.append(torch.cat([spec.real, spec.imag], dim=1).T)
        return torch.cat(parts, dim=1).contiguous()

    # ---- image side ---------------------------------------------------------------------------------------
    def nuisance_cells(self, nuisance: dict | None, index: int) -> list[NuisanceCell]:
        """The nuisance states of image ``index``: CTF parameters, B-factor, bead width, and the half-width of
        the defocus cell each stands for (0 where the defocus is known or fixed)."""
        p, s, known = self.sim.priors, self.settings, self.settings.known
        if known and nuisance is None:
            raise LikelihoodError(
                f"the likelihood's known nuisances ({', '.join(sorted(known))}) need each image's values"
            )

        def value(key: str) -> float:
            assert nuisance is not None
            return float(nuisance[key][index])

        if "ctf" in known:
            ctf_cells = [(CTF(**{k: value(k) for k in RECORDED_CTF}), 0.0)]
        else:
            g = p.optics[0]
            n_defocus = s.defocus_points if gridsize.varies(p.defocus_range_A) else 1
            half_width = 0.5 * (p.defocus_range_A[1] - p.defocus_range_A[0]) / n_defocus
            phase_shift = float(p.phase_shift_range_deg[0])
            ctf_cells = [
                (dataclasses.replace(CTF.unastigmatic(d, g), phase_shift_deg=phase_shift), half_width)
                for d in midpoints(*p.defocus_range_A, s.defocus_points)
            ]
        b_values = [value("b_factor_A2")] if "b_factor" in known else midpoints(*p.b_factor_range_A2, s.b_factor_points)
        sigmas = (
            [value("bead_sigma_A")] if "bead_sigma" in known else midpoints(*p.bead_sigma_range_A, s.bead_sigma_points)
        )
        return [
            NuisanceCell(dataclasses.replace(recorded, b_factor_A2=float(b)), float(sigma), width)
            for recorded, width in ctf_cells
            for b in b_values
            for sigma in sigmas
        ]

    def filter_of(self, cell: NuisanceCell) -> torch.Tensor:
        """A nuisance state's filter (K,): CTF × B-factor envelope × extra bead blur."""
        base = ctf(self.s_y, self.s_x, cell.ctf)
        extra = 0.0 if self.blur_base is None else max(cell.bead_sigma_A**2 - self.blur_base**2, 0.0)
        return (base * torch.exp(-2 * math.pi**2 * extra * (self.s_x**2 + self.s_y**2))).reshape(-1)

    def filters(self, nuisance: dict | None, index: int) -> torch.Tensor:
        """Nuisance filters (J, K) of image ``index`` (the whitening is on the projections already)."""
        return torch.stack([self.filter_of(cell) for cell in self.nuisance_cells(nuisance, index)])

    def initial_rows(self, cells: list[NuisanceCell]) -> Rows:
        """Every nuisance state × every shift of the grid, equally weighted."""
        j, n_shifts = len(cells), len(self.shifts_A)
        p = self.sim.priors
        shift_half = p.shift_max_A / len(midpoints(-p.shift_max_A, p.shift_max_A, self.settings.shift_points))
        shift_half = shift_half if p.shift_max_A > 0 else 0.0
        half = torch.tensor([[shift_half, shift_half, c.defocus_half_width_A] for c in cells], dtype=torch.float64)
        return Rows(
            cell=torch.arange(j).repeat_interleave(n_shifts),
            shift_A=self.shifts_A.cpu().repeat(j, 1),
            log_w=torch.full((j * n_shifts,), -math.log(j * n_shifts), dtype=torch.float64),
            half_width=half.repeat_interleave(n_shifts, dim=0),
        )

    def image_spectrum(self, image: torch.Tensor):
        """The (whitened) image's spectrum (K,), Σ I and Σ I²."""
        if self.whitening is not None:
            image = torch.fft.irfft2(
                torch.fft.rfft2(image) * self.whitening.reshape(self.box, -1), s=(self.box, self.box)
            )
        image64 = image.double()
        return torch.fft.rfft2(image).reshape(-1), float(image64.sum()), float((image64 * image64).sum())

    def image_rows(self, spectrum: torch.Tensor, filters: torch.Tensor, rows: Rows) -> torch.Tensor:
        """The image's matrix (R, 2K) whose product with a projection's spectrum is each row's cross term."""
        phases = shift_phase(self.s_y, self.s_x, rows.shift_A.to(self.device)).reshape(len(rows.cell), -1)
        x = (spectrum.conj() * self.parseval)[None, :] * filters[rows.cell.to(self.device)] * phases
        return torch.cat([x.real, -x.imag], dim=1)

    def row_evidence(self, left, sum_i, sum_ii, filters, rows: Rows, spectra, reduce: bool = True) -> torch.Tensor:
        """log p(image | column, row) for the columns of ``spectra`` (2K, M): summed over the rows with their
        weights (M,), or per row (R, M) with ``reduce`` False."""
        k = self.s_x.numel()
        power = (spectra[:k] ** 2 + spectra[k:] ** 2) * self.parseval[:, None]
        sum_pp = (filters**2) @ power  # (J, M)
        sum_p = filters[:, :1] * spectra[:1]  # DC: F(0)·P(0)
        cell = rows.cell.to(self.device)
        log_w = rows.log_w.to(self.device)[:, None]
        out = []
        for cols in chunks(spectra.shape[1], 4096):
            sum_ip = (left @ spectra[:, cols]).double()
            e = log_evidence(sum_ip, sum_i, sum_ii, sum_p[cell, cols].double(), sum_pp[cell, cols].double(), self.n)
            out.append(torch.logsumexp(e + log_w, dim=0) if reduce else e)
        return torch.cat(out, dim=-1)

    # ---- per image ----------------------------------------------------------------------------------------
    def log_likelihood(self, images, nuisance: dict | None = None, label: str = "likelihood") -> dict:
        """Per-template log-likelihoods (B, T) of images (B, box, box), an array or a tensor on any device (the
        simulator's, a GPU's included); ``nuisance`` holds the known values.

        Also returns ``log_likelihood_coarse`` (before any refinement), and per image ``n_cells`` (orientation
        cells per template) and ``n_rows`` (shift × nuisance cells) summed over after the refinements.
        """
        if self.settings.known and nuisance is None:
            raise LikelihoodError(f"likelihood.known {list(self.settings.known)} needs each image's values")
        # never through numpy: a CUDA tensor has no numpy view (np.asarray would raise)
        images = torch.as_tensor(images, dtype=torch.float32, device=self.device)
        t = self.n_templates
        results, coarse_results, n_cells, n_rows = [], [], [], []
        progress = Progress(len(images), label, unit="images")
        for b in range(len(images)):
            cells = self.nuisance_cells(nuisance, b)
            filters = torch.stack([self.filter_of(cell) for cell in cells])
            rows = self.initial_rows(cells)
            spectrum, sum_i, sum_ii = self.image_spectrum(images[b])
            left = self.image_rows(spectrum, filters, rows)
            log_l = self.row_evidence(left, sum_i, sum_ii, filters, rows, self.coarse_spectra).reshape(t, -1)
            log_w = torch.full((log_l.shape[1],), self.coarse_log_weight, dtype=torch.float64, device=self.device)
            coarse_results.append(torch.logsumexp(log_l + log_w, dim=1))
            if self.settings.nuisance_refine_levels > 0 and bool((rows.half_width > 0).any()):
                log_l, rows, filters = self.refine_nuisances(
                    spectrum, sum_i, sum_ii, cells, filters, rows, log_l, log_w
                )
                left = self.image_rows(spectrum, filters, rows)
            if self.coarse is not None and self.settings.refine_levels > 0:  # on the refined shift × defocus cells
                log_l, log_w = self.refine(left, sum_i, sum_ii, filters, rows, log_l, log_w)
            results.append(torch.logsumexp(log_l + log_w, dim=1))
            n_cells.append(log_l.shape[1])
            n_rows.append(len(rows.cell))
            progress.update(1)
        return {
            "log_likelihood": torch.stack(results).cpu().numpy(),
            "log_likelihood_coarse": torch.stack(coarse_results).cpu().numpy(),
            "n_cells": np.array(n_cells),
            "n_rows": np.array(n_rows),
        }

    def refine(self, left, sum_i, sum_ii, filters, rows, log_l, log_w):
        """Per template, split the ``refine_top`` orientation cells holding most of that template's mass into
        eight, ``refine_levels`` times: each template converges on its own best views. Returns the
        log-likelihoods (T, C) and log weights (T, C) of each template's final cells."""
        t, c = log_l.shape
        top = min(self.settings.refine_top, c)
        assert self.coarse is not None and self.width is not None  # refinement splits the SO(3) cells
        centres = self.coarse.to(self.device).expand(t, c, 3)
        widths = self.width.to(self.device).expand(t, c, 3)
        log_w = log_w.expand(t, c)
        template = torch.arange(t, device=self.device).repeat_interleave(8 * top)
        for _ in range(self.settings.refine_levels):
            chosen = torch.topk(log_l + log_w, top, dim=1).indices  # (T, top)
            pick = chosen[..., None].expand(t, top, 3)
            kids = children(torch.gather(centres, 1, pick).reshape(-1, 3), torch.gather(widths, 1, pick).reshape(-1, 3))
            spectra = self.project_pairs(template, euler_matrices(kids).float().to(self.device))
            kid_l = self.row_evidence(left, sum_i, sum_ii, filters, rows, spectra).reshape(t, 8 * top)
            keep = torch.ones(t, log_l.shape[1], dtype=torch.bool, device=self.device)
            keep[torch.arange(t, device=self.device)[:, None], chosen] = False
            kid_w = (torch.gather(log_w, 1, chosen) - LOG_8).repeat_interleave(8, dim=1)
            kid_widths = (0.5 * torch.gather(widths, 1, pick)).repeat_interleave(8, dim=1)
            n_kept = log_l.shape[1] - top
            centres = torch.cat([centres[keep].reshape(t, n_kept, 3), kids.reshape(t, 8 * top, 3)], dim=1)
            widths = torch.cat([widths[keep].reshape(t, n_kept, 3), kid_widths], dim=1)
            log_l = torch.cat([log_l[keep].reshape(t, n_kept), kid_l], dim=1)
            log_w = torch.cat([log_w[keep].reshape(t, n_kept), kid_w], dim=1)
        return log_l, log_w

    def refine_nuisances(self, spectrum, sum_i, sum_ii, cells, filters, rows, log_l, log_w):
        """Split the shift × defocus cells that hold most of each template's mass, ``nuisance_refine_levels``
        times: each into four shift quarters and two defocus halves (where they vary), the parent's weight
        shared. Measured on the ``nuisance_cells`` coarse orientation cells that hold most of any template's
        mass, which are then evaluated on the refined cells (the others, negligible in the sums, keep the coarse
        ones). Returns the log-likelihoods (T, C), the refined rows and their filters."""
        t, s = self.n_templates, self.settings
        active = heaviest_cells(log_l, log_w, min(s.nuisance_cells, log_l.shape[1]))
        k2 = self.coarse_spectra.shape[0]
        spectra = self.coarse_spectra.reshape(k2, t, -1)[:, :, active].reshape(k2, -1)  # template-major columns
        column_w = log_w[active].repeat(t)
        cells = list(cells)
        for _ in range(s.nuisance_refine_levels):
            left = self.image_rows(spectrum, filters, rows)
            per_row = self.row_evidence(left, sum_i, sum_ii, filters, rows, spectra, reduce=False)
            chosen = heaviest_rows(per_row + column_w[None, :], rows, t, s.nuisance_refine_top)
            rows, cells = split_rows(rows, chosen, cells)
            if len(cells) > len(filters):
                filters = torch.cat([filters, torch.stack([self.filter_of(c) for c in cells[len(filters) :]])])
        left = self.image_rows(spectrum, filters, rows)
        log_l = log_l.clone()
        log_l[:, active] = self.row_evidence(left, sum_i, sum_ii, filters, rows, spectra).reshape(t, -1)
        return log_l, rows, filters


def heaviest_cells(log_l: torch.Tensor, log_w: torch.Tensor, top: int) -> torch.Tensor:
    """The ``top`` orientation cells holding the largest share of any template's mass."""
    mass = log_l + log_w
    share = mass - torch.logsumexp(mass, dim=1, keepdim=True)
    return torch.topk(share.max(dim=0).values, top).indices
