"""Projections of templates along the beam (z), as images or their rfft2 spectra.

Two kinds of template, one convention: pixel ``box // 2`` of an image is the
origin, images are in electrons per pixel (an image sums to the projected
electrons), and spectra are rfft2 layouts (B, box, box//2+1) ready for a CTF
multiply.

* Atomic templates: Gaussian beads of width σ in Å weighted by electron
  counts. ``project_gaussians_exact`` is the separable real-space reference;
  ``project_gaussians_fourier`` spreads beads bilinearly onto an oversampled
  grid and applies the Gaussian and the spreading correction in one Fourier
  multiply.
* Volumetric templates (MRC maps, e.g. from the ``volumes`` stage or any EM
  map): Fourier-slice projection. ``volume_spectrum`` zero-pads the map by
  ``oversample``, divides it by the trilinear kernel's real-space transform
  (gridding correction) and transforms it once; ``slice_spectrum`` samples
  central slices trilinearly at rotated frequencies.

A rotation R acts on a template as r ↦ R r, so the projection's spectrum at
(s_x, s_y) is the template's 3-D spectrum at Rᵀ (s_x, s_y, 0).
"""

from __future__ import annotations

import math

import torch
from jaxtyping import Complex, Float
from torch import Tensor

from cryoflow.physics.ctf import fourier_frequencies
from cryoflow.physics.theta import reference_index


def project_gaussians_exact(
    coords_A: Float[Tensor, "batch n 3"], weights: Float[Tensor, " n"], sigma_A: float, box: int, pixel_size_A: float
) -> Float[Tensor, "batch box box"]:
    """Reference projection along z: (B, box, box) images, electrons per pixel at pixel centres.

    Separable evaluation of Σ_i w_i p² exp(−|r − r_i|²/2σ²)/(2πσ²); pixel
    ``box // 2`` is at the origin.
    """
    axis = (torch.arange(box, device=coords_A.device, dtype=coords_A.dtype) - box // 2) * pixel_size_A
    gx = torch.exp(-((axis - coords_A[..., 0:1]) ** 2) / (2 * sigma_A**2))  # (B, N, box)
    gy = torch.exp(-((axis - coords_A[..., 1:2]) ** 2) / (2 * sigma_A**2))
    scale = pixel_size_A**2 / (2 * math.pi * sigma_A**2)
    return torch.einsum("bny,bnx->byx", gy * (weights[:, None] * scale), gx)


def splat_bilinear(
    xy_px: Float[Tensor, "batch n 2"], weights: Float[Tensor, "*#batch n"], box: int
) -> Float[Tensor, "batch box box"]:
    """Spread point masses at pixel coordinates (B, N, 2) = (x, y) onto (B, box, box), periodically."""
    batch = xy_px.shape[0]
    base = torch.floor(xy_px)
    frac = xy_px - base
    base = base.long()
    grid = torch.zeros(batch, box * box, device=xy_px.device, dtype=xy_px.dtype)
    for dy in (0, 1):
        wy = frac[..., 1] if dy else 1 - frac[..., 1]
        iy = (base[..., 1] + dy) % box
        for dx in (0, 1):
            wx = frac[..., 0] if dx else 1 - frac[..., 0]
            ix = (base[..., 0] + dx) % box
            grid.scatter_add_(1, iy * box + ix, wx * wy * weights)
    return grid.reshape(batch, box, box)


def crop_rfft2(spectrum: Complex[Tensor, "*batch m mx"], box: int) -> Complex[Tensor, "*batch box bx"]:
    """Keep the low frequencies of an rfft2 spectrum (…, M, M//2+1) for a box × box image."""
    half = box // 2
    return torch.cat([spectrum[..., :half, : half + 1], spectrum[..., -half:, : half + 1]], dim=-2)


def project_gaussians_fourier(
    coords_A: torch.Tensor,
    weights: torch.Tensor,
    sigma_A: float | Float[Tensor, "batch 1 1"],
    box: int,
    pixel_size_A: float,
    oversample: int = 2,
) -> torch.Tensor:
    """rfft2 (B, box, box//2+1) of the Gaussian-bead projection, by spreading and one Fourier multiply.

    Beads are spread bilinearly onto a grid ``oversample`` times finer, the
    spectrum is divided by the bilinear kernel's transform sinc²(s p')
    per axis, multiplied by the Gaussian's exp(−2π²σ²s²) and cropped to ``box``.
    """
    fine_box = box * oversample
    fine_pixel = pixel_size_A / oversample
    xy = coords_A[..., :2] / fine_pixel + fine_box // 2
    fine = torch.fft.rfft2(splat_bilinear(xy, weights, fine_box))
    spectrum = crop_rfft2(fine, box)
    s_y, s_x = fourier_frequencies(box, pixel_size_A, device=coords_A.device, dtype=coords_A.dtype)
    kernel = (torch.sinc(s_x * fine_pixel) * torch.sinc(s_y * fine_pixel)) ** 2
    gaussian = torch.exp(-2 * math.pi**2 * sigma_A**2 * (s_x**2 + s_y**2))
    return spectrum * (gaussian / kernel)


def shift_phase(
    s_y: Float[Tensor, "y x"], s_x: Float[Tensor, "y x"], shift_A: Float[Tensor, "batch 2"]
) -> Complex[Tensor, "batch y x"]:
    """Fourier factor exp(−2πi s·t) that moves images by ``shift_A`` (B, 2) = (x, y) in Å."""
    t_x, t_y = shift_A[:, 0, None, None], shift_A[:, 1, None, None]
    return torch.polar(torch.ones_like(s_x * t_x), -2 * math.pi * (s_x * t_x + s_y * t_y))


def centre_phase(box: int, device=None) -> torch.Tensor:
    """(−1)^(k_y + k_x) on the rfft2 grid: puts the image origin at pixel ``box // 2`` (even boxes)."""
    k_y = torch.fft.fftfreq(box, 1.0 / box, device=device).round().long()
    k_x = torch.arange(box // 2 + 1, device=device)
    return 1.0 - 2.0 * ((k_y[:, None] + k_x[None, :]) % 2).float()


def volume_spectrum(volume_zyx: torch.Tensor, oversample: int = 3) -> torch.Tensor:
    """Half 3-D spectrum (…, M, M, M//2+1), M = oversample · N, of cubic maps (…, N, N, N) prepared for slicing.

    The map's centre voxel N//2 is the origin. Trilinear interpolation on the
    padded spectrum (spacing 1/(M v)) multiplies the map by sinc²(x/M) per
    axis (x in voxels); dividing by it first corrects the slices. The z and y
    axes are centred (index M//2 is zero frequency); x holds k_x ≥ 0 only, the
    rest follows from Hermitian symmetry, which halves the memory.
    """
    n = volume_zyx.shape[-1]
    if volume_zyx.shape[-3:] != (n, n, n):
        raise ValueError(f"volume must be cubic, got shape {tuple(volume_zyx.shape[-3:])}")
    m = n * oversample
    x = (torch.arange(n, dtype=torch.float64, device=volume_zyx.device) - n // 2) / m
    kernel = torch.sinc(x) ** 2
    kernel3 = (kernel[:, None, None] * kernel[None, :, None] * kernel[None, None, :]).to(volume_zyx.dtype)
    start = m // 2 - n // 2
    padded = volume_zyx.new_zeros(volume_zyx.shape[:-3] + (m, m, m))
    padded[..., start : start + n, start : start + n, start : start + n] = volume_zyx / kernel3
    dims = (-3, -2, -1)
    spectrum = torch.fft.rfftn(torch.fft.ifftshift(padded, dim=dims), dim=dims)
    return torch.fft.fftshift(spectrum, dim=(-3, -2))


def slice_spectrum(
    spectra: torch.Tensor,
    rotation: torch.Tensor,
    s_y: torch.Tensor,
    s_x: torch.Tensor,
    voxel_size_A: float,
    index: torch.Tensor,
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Central slices (B, *s.shape) of half spectra (T, M, M, M//2+1) from ``volume_spectrum``.

    Image b samples the templates ``index[b]`` (B, K) at the 3-D frequencies
    Rᵀ (s_x, s_y, 0) of its rotation (B, 3, 3), trilinearly, and sums them
    with ``weight`` (B, K) (all ones when ``None``), sharing the interpolation
    weights: K = 1 for one map, 2 between neighbours in 1-D θ, 4 on a 2-D
    grid. Points with k_x < 0 are read at −k and conjugated; frequencies
    beyond the map's Nyquist limit give zero.
    """
    m = spectra.shape[-3]
    half = m // 2 + 1
    plane = torch.stack([s_x, s_y, torch.zeros_like(s_x)], dim=-1).reshape(-1, 3)  # (P, 3) as (x, y, z)
    k = torch.einsum("bji,pj->bpi", rotation, plane) * (m * voxel_size_A)  # Rᵀ s in grid units
    inside = (k.abs() <= m // 2 - 1).all(dim=-1)
    mirrored = k[..., 0] < 0
    k = torch.where(mirrored[..., None], -k, k).clamp(-(m // 2 - 1), m // 2 - 1)
    k = k + torch.tensor([0, m // 2, m // 2], dtype=k.dtype, device=k.device)
    base = torch.floor(k)
    frac_k = k - base
    base = base.long()
    origin = (base[..., 2] * m + base[..., 1]) * half + base[..., 0]
    flat = spectra.reshape(-1)
    size = m * m * half
    sources = [
        (index[:, k, None].long() * size, None if weight is None else weight[:, k, None]) for k in range(index.shape[1])
    ]
    out = torch.zeros(k.shape[:2], dtype=spectra.dtype, device=spectra.device)
    for dz in (0, 1):
        wz = frac_k[..., 2] if dz else 1 - frac_k[..., 2]
        for dy in (0, 1):
            wzy = wz * (frac_k[..., 1] if dy else 1 - frac_k[..., 1])
            for dx in (0, 1):
                weight = wzy * (frac_k[..., 0] if dx else 1 - frac_k[..., 0])
                linear = origin + ((dz * m + dy) * half + dx)
                for offset, blend in sources:
                    w = weight if blend is None else weight * blend
                    out += w * flat[(offset + linear).clamp_max(flat.numel() - 1)]
    out = torch.where(mirrored, out.conj(), out)
    out = torch.where(inside, out, torch.zeros_like(out))
    return out.reshape((-1,) + s_x.shape)


def project_volume_fourier(
    volume_zyx: torch.Tensor,
    rotation: torch.Tensor,
    voxel_size_A: float,
    box: int,
    pixel_size_A: float,
    oversample: int = 3,
) -> torch.Tensor:
    """rfft2 (B, box, box//2+1) of the projections of one map (N, N, N) in e/Å³ under rotations (B, 3, 3)."""
    spectra = volume_spectrum(volume_zyx, oversample)[None]
    s_y, s_x = fourier_frequencies(box, pixel_size_A, device=volume_zyx.device, dtype=rotation.dtype)
    index = torch.zeros(len(rotation), 1, dtype=torch.long, device=rotation.device)
    sliced = slice_spectrum(spectra, rotation, s_y, s_x, voxel_size_A, index)
    return sliced * (voxel_size_A**3 * centre_phase(box, volume_zyx.device))


def bracket(theta_A: torch.Tensor, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Neighbouring template indices (lower, upper) and the fraction of the way from lower to upper."""
    theta = theta.clamp(theta_A[0], theta_A[-1])
    upper = torch.searchsorted(theta_A, theta.contiguous(), right=True).clamp(1, len(theta_A) - 1)
    lower = upper - 1
    return lower, upper, (theta - theta_A[lower]) / (theta_A[upper] - theta_A[lower])


def grid_axes(theta_A: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Axis values of templates at sorted θ (T,), or on a row-major 2-D grid (T, 2) = meshgrid(θ₁, θ₂)."""
    if theta_A.ndim == 1:
        if torch.any(torch.diff(theta_A) <= 0):
            raise ValueError("template θ values must increase strictly")
        return (theta_A,)
    axes = tuple(torch.unique(theta_A[:, d]) for d in range(theta_A.shape[1]))
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, len(axes))
    if grid.shape != theta_A.shape or not torch.allclose(grid, theta_A, atol=1e-4):
        raise ValueError("2-D template θ values must form a row-major grid (template i·n₂ + j at (θ₁ᵢ, θ₂ⱼ))")
    return axes


def interpolation_weights(axes, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Templates (B, K) and weights (B, K) that interpolate at ``theta`` (B,) or (B, 2), K = 2 or 4.

    Linear between neighbours for 1-D θ, bilinear between the four corners of
    the grid cell for 2-D θ (``axes`` from ``grid_axes``; a 1-D tensor also works).
    """
    if isinstance(axes, torch.Tensor):
        axes = (axes,)
    if len(axes) == 1:
        lower, upper, frac = bracket(axes[0], theta.reshape(-1))
        return torch.stack([lower, upper], dim=1), torch.stack([1 - frac, frac], dim=1)
    (i0, i1, f), (j0, j1, g) = (bracket(axis, theta[:, d]) for d, axis in enumerate(axes))
    n2 = len(axes[1])
    index = torch.stack([i0 * n2 + j0, i0 * n2 + j1, i1 * n2 + j0, i1 * n2 + j1], dim=1)
    weight = torch.stack([(1 - f) * (1 - g), (1 - f) * g, f * (1 - g), f * g], dim=1)
    return index, weight


def interpolate_coords(coords: torch.Tensor, axes, theta: torch.Tensor) -> torch.Tensor:
    """Bead coordinates (B, N, 3) at ``theta`` from templates (T, N, 3) on ``axes`` (see ``interpolation_weights``)."""
    index, weight = interpolation_weights(axes, theta)
    return torch.einsum("bk,bknc->bnc", weight, coords[index])


class AtomTemplates:
    """Gaussian-bead templates (T, N, 3) in Å at sorted θ (T,) or on a 2-D θ grid (T, 2), centred on the
    reference's centre of mass.

    Between templates the coordinates are interpolated linearly, bilinearly
    on a grid (exact along normal modes); projection is ``project_gaussians_fourier``.
    """

    def __init__(self, coords_A, theta_A, weights, oversample: int = 2, center_A=None, device="cpu"):
        self.device = torch.device(device)
        coords = torch.as_tensor(coords_A, dtype=torch.float32)
        weights = torch.as_tensor(weights, dtype=torch.float32)
        theta_A = torch.as_tensor(theta_A, dtype=torch.float32)
        if center_A is None:
            reference = coords[reference_index(theta_A.numpy())]
            center_A = (reference * weights[:, None]).sum(0) / weights.sum()
        self.center_A = torch.as_tensor(center_A, dtype=torch.float32)
        self.coords = (coords - self.center_A).to(self.device)
        self.weights = weights.to(self.device)
        self.theta_A = theta_A.to(self.device).contiguous()
        self.axes = grid_axes(self.theta_A)
        self.oversample = int(oversample)

    @property
    def total_electrons(self) -> float:
        return float(self.weights.sum())

    def spectrum(self, theta, rotation, shift_A, box: int, pixel_size_A: float, bead_sigma_A) -> torch.Tensor:
        """rfft2 (B, box, box//2+1) of the rotated, shifted projections at θ; σ a float or (B, 1, 1)."""
        coords = interpolate_coords(self.coords, self.axes, theta) @ rotation.transpose(-1, -2)
        coords = torch.cat([coords[..., :2] + shift_A[:, None, :], coords[..., 2:]], dim=-1)
        return project_gaussians_fourier(coords, self.weights, bead_sigma_A, box, pixel_size_A, self.oversample)


class VolumeTemplates:
    """Density-map templates (T, N, N, N) in e/Å³ at sorted θ (T,) or on a 2-D θ grid (T, 2); voxel N//2 of
    each map is the origin.

    Each map is transformed once (``volume_spectrum``); an image at θ blends
    the central slices of the two neighbouring maps linearly (of the four
    corners of its grid cell, bilinearly). Memory:
    T · M² (M/2 + 1) complex64 values, M = oversample · N.
    """

    def __init__(
        self,
        volumes_zyx,
        theta_A,
        voxel_size_A: float,
        oversample: int = 3,
        device="cpu",
        map_sigma_A: float | None = None,
    ):
        self.device = torch.device(device)
        self.map_sigma_A = map_sigma_A
        volumes = torch.as_tensor(volumes_zyx, dtype=torch.float32, device=self.device)
        self.theta_A = torch.as_tensor(theta_A, dtype=torch.float32, device=self.device).contiguous()
        self.axes = grid_axes(self.theta_A)
        self.voxel_size_A = float(voxel_size_A)
        self.oversample = int(oversample)
        self._electrons = float(volumes[0].sum()) * self.voxel_size_A**3
        self.spectra = torch.stack([volume_spectrum(v, self.oversample) for v in volumes])

    @property
    def total_electrons(self) -> float:
        return self._electrons

    def spectrum(self, theta, rotation, shift_A, box: int, pixel_size_A: float, bead_sigma_A=None) -> torch.Tensor:
        """rfft2 (B, box, box//2+1) of the rotated, shifted projections at θ.

        The maps carry their beads' width ``map_sigma_A``; a per-image ``bead_sigma_A`` wider than that
        blurs each image by the Gaussian that makes up the difference (σ² − σ_map²), so a bead-width
        range works with maps rasterized at its low end.
        """
        s_y, s_x = fourier_frequencies(box, pixel_size_A, device=self.device)
        sliced = slice_spectrum(
            self.spectra, rotation, s_y, s_x, self.voxel_size_A, *interpolation_weights(self.axes, theta)
        )
        phase = shift_phase(s_y, s_x, shift_A) * centre_phase(box, self.device)
        if bead_sigma_A is not None and self.map_sigma_A is not None:
            sigma = torch.as_tensor(bead_sigma_A, dtype=torch.float32, device=self.device).reshape(-1, 1, 1)
            extra = (sigma**2 - self.map_sigma_A**2).clamp_min(0.0)
            phase = phase * torch.exp(-2.0 * math.pi**2 * extra * (s_y**2 + s_x**2))
        return sliced * phase * self.voxel_size_A**3
