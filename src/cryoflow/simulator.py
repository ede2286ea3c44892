"""Forward model: cryo-EM particle images of Gaussian-bead templates.

Image formation for one particle with conformation θ:

1. coordinates at θ by linear interpolation between the neighbouring templates;
2. a uniformly random 3-D rotation (normalized Gaussian quaternion, the Haar
   measure on SO(3)) and an in-plane shift in Å;
3. projection along z of Gaussian beads of width ``bead_sigma_A`` weighted by
   their electron counts; pixel values are electrons per pixel, so an image
   sums to the total weight;
4. CTF (``cryoflow.ctf``) with a B-factor envelope;
5. white Gaussian noise at a signal-to-noise ratio defined as the variance of
   the noiseless image inside a circular mask of radius ``mask_radius_A`` over
   the noise variance, SNR drawn log-uniformly;
6. per-image normalization to zero mean and unit variance.

The fast projection spreads every bead bilinearly onto an (optionally
oversampled) grid and applies the Gaussian, the spreading-kernel correction
and the CTF in one Fourier multiply. ``project_gaussians_exact`` is the
separable real-space reference it is tested against. Everything runs on the
tensors' device; nothing returns to the host.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from cryoflow.ctf import ctf, fourier_frequencies


def quaternion_to_matrix(q: torch.Tensor) -> torch.Tensor:
    """Rotation matrices (B, 3, 3) from unit quaternions (B, 4) in (w, x, y, z) order."""
    w, x, y, z = q.unbind(-1)
    return torch.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
            2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
            2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
        ],
        dim=-1,
    ).reshape(q.shape[:-1] + (3, 3))  # fmt: skip


def uniform_rotations(n: int, generator: torch.Generator | None = None, device=None, dtype=torch.float32):
    """``n`` rotation matrices drawn uniformly (Haar measure) from SO(3)."""
    q = torch.randn(n, 4, generator=generator, device=device, dtype=dtype)
    q = q / q.norm(dim=-1, keepdim=True)
    return quaternion_to_matrix(q)


def interpolate_coords(coords: torch.Tensor, theta_A: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Bead coordinates (B, N, 3) at ``theta`` (B,) from templates (T, N, 3) at sorted ``theta_A`` (T,)."""
    theta = theta.clamp(theta_A[0], theta_A[-1])
    upper = torch.searchsorted(theta_A, theta.contiguous(), right=True).clamp(1, len(theta_A) - 1)
    lower = upper - 1
    frac = ((theta - theta_A[lower]) / (theta_A[upper] - theta_A[lower]))[:, None, None]
    return coords[lower] + frac * (coords[upper] - coords[lower])


def project_gaussians_exact(
    coords_A: torch.Tensor, weights: torch.Tensor, sigma_A: float, box: int, pixel_size_A: float
) -> torch.Tensor:
    """Reference projection along z: (B, box, box) images, electrons per pixel at pixel centres.

    Separable evaluation of Σ_i w_i p² exp(−|r − r_i|²/2σ²)/(2πσ²); pixel
    ``box // 2`` is at the origin.
    """
    axis = (torch.arange(box, device=coords_A.device, dtype=coords_A.dtype) - box // 2) * pixel_size_A
    gx = torch.exp(-((axis - coords_A[..., 0:1]) ** 2) / (2 * sigma_A**2))  # (B, N, box)
    gy = torch.exp(-((axis - coords_A[..., 1:2]) ** 2) / (2 * sigma_A**2))
    scale = pixel_size_A**2 / (2 * math.pi * sigma_A**2)
    return torch.einsum("bny,bnx->byx", gy * (weights[:, None] * scale), gx)


def splat_bilinear(xy_px: torch.Tensor, weights: torch.Tensor, box: int) -> torch.Tensor:
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


def crop_rfft2(spectrum: torch.Tensor, box: int) -> torch.Tensor:
    """Keep the low frequencies of an rfft2 spectrum (…, M, M//2+1) for a box × box image."""
    half = box // 2
    return torch.cat([spectrum[..., :half, : half + 1], spectrum[..., -half:, : half + 1]], dim=-2)


def project_gaussians_fourier(
    coords_A: torch.Tensor,
    weights: torch.Tensor,
    sigma_A: float,
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


def circular_mask(box: int, radius_px: float, device=None, dtype=torch.float32) -> torch.Tensor:
    """Boolean (box, box) disc of ``radius_px`` around pixel (box//2, box//2)."""
    axis = torch.arange(box, device=device, dtype=dtype) - box // 2
    return (axis[:, None] ** 2 + axis[None, :] ** 2) <= radius_px**2


def add_noise(images: torch.Tensor, snr: torch.Tensor, mask: torch.Tensor, generator=None) -> torch.Tensor:
    """Add white Gaussian noise with variance var(signal inside ``mask``) / snr per image."""
    signal_var = images[:, mask].var(dim=1)
    noise_std = torch.sqrt(signal_var / snr)
    noise = torch.randn(images.shape, generator=generator, device=images.device, dtype=images.dtype)
    return images + noise * noise_std[:, None, None]


def normalize(images: torch.Tensor) -> torch.Tensor:
    """Zero mean, unit standard deviation per image (a constant image is only centred).

    Training images and experimental particles (``cryoflow.particles``) both
    go through this one function, so they are normalized identically.
    """
    mean = images.mean(dim=(-2, -1), keepdim=True)
    std = images.std(dim=(-2, -1), keepdim=True)
    return (images - mean) / torch.where(std > 0, std, torch.ones_like(std))


@dataclass
class Priors:
    """Prior ranges of the nuisance parameters (all ranges inclusive, units in the names)."""

    theta_range_A: tuple[float, float]
    shift_max_A: float = 0.0
    defocus_range_A: tuple[float, float] = (5000.0, 25000.0)
    astigmatism_max_A: float = 0.0
    b_factor_range_A2: tuple[float, float] = (0.0, 100.0)
    snr_range: tuple[float, float] = (0.05, 1.0)
    amplitude_contrast: float = 0.1
    voltage_kV: float = 300.0
    cs_mm: float = 2.7
    bead_sigma_A: float = 2.0
    mask_radius_A: float | None = None
    extra: dict = field(default_factory=dict)


def _uniform(n, low, high, generator, device):
    return low + (high - low) * torch.rand(n, generator=generator, device=device)


class Simulator:
    """Draws (θ, image) pairs from the prior and the forward model, on one device."""

    def __init__(
        self,
        template_coords,
        template_theta_A,
        weights,
        box_px: int,
        pixel_size_A: float,
        priors: Priors,
        center_A=None,
        device: str | torch.device = "cpu",
        oversample: int = 2,
    ):
        self.device = torch.device(device)
        coords = torch.as_tensor(template_coords, dtype=torch.float32)
        self.weights = torch.as_tensor(weights, dtype=torch.float32, device=self.device)
        if center_A is None:
            ref = coords[int(torch.argmin(torch.as_tensor(template_theta_A).abs()))]
            center_A = (ref * self.weights.cpu()[:, None]).sum(0) / self.weights.sum().cpu()
        self.center_A = torch.as_tensor(center_A, dtype=torch.float32)
        self.coords = (coords - self.center_A).to(self.device)
        self.theta_A = torch.as_tensor(template_theta_A, dtype=torch.float32, device=self.device)
        self.box = int(box_px)
        self.pixel_size_A = float(pixel_size_A)
        self.priors = priors
        self.oversample = oversample
        radius_A = priors.mask_radius_A or 0.5 * self.box * self.pixel_size_A
        self.mask = circular_mask(self.box, radius_A / self.pixel_size_A, device=self.device)
        self.s_y, self.s_x = fourier_frequencies(self.box, self.pixel_size_A, device=self.device)

    def sample_theta(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        low, high = self.priors.theta_range_A
        return _uniform(n, low, high, generator, self.device)

    def sample_nuisance(self, n: int, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Pose, shift, CTF and noise parameters for ``n`` images."""
        p = self.priors
        defocus = _uniform(n, *p.defocus_range_A, generator, self.device)
        astig = _uniform(n, -p.astigmatism_max_A, p.astigmatism_max_A, generator, self.device)
        log_snr = _uniform(n, math.log(p.snr_range[0]), math.log(p.snr_range[1]), generator, self.device)
        return {
            "rotation": uniform_rotations(n, generator, self.device),
            "shift_A": _uniform((n, 2), -p.shift_max_A, p.shift_max_A, generator, self.device),
            "defocus_u_A": defocus + astig,
            "defocus_v_A": defocus - astig,
            "astigmatism_angle_deg": _uniform(n, 0.0, 180.0, generator, self.device),
            "b_factor_A2": _uniform(n, *p.b_factor_range_A2, generator, self.device),
            "snr": torch.exp(log_snr),
        }

    def noiseless(self, theta: torch.Tensor, nuisance: dict[str, torch.Tensor]) -> torch.Tensor:
        """CTF-modulated projections (B, box, box) in electrons per pixel, before noise."""
        coords = interpolate_coords(self.coords, self.theta_A, theta)
        coords = coords @ nuisance["rotation"].transpose(-1, -2)
        coords = torch.cat([coords[..., :2] + nuisance["shift_A"][:, None, :], coords[..., 2:]], dim=-1)
        spectrum = project_gaussians_fourier(
            coords, self.weights, self.priors.bead_sigma_A, self.box, self.pixel_size_A, self.oversample
        )

        def per_image(key):
            return nuisance[key][:, None, None]

        transfer = ctf(
            self.s_y,
            self.s_x,
            per_image("defocus_u_A"),
            per_image("defocus_v_A"),
            per_image("astigmatism_angle_deg"),
            self.priors.voltage_kV,
            self.priors.cs_mm,
            self.priors.amplitude_contrast,
            0.0,
            per_image("b_factor_A2"),
        )
        return torch.fft.irfft2(spectrum * transfer, s=(self.box, self.box))

    def simulate(self, theta: torch.Tensor, generator: torch.Generator | None = None, nuisance=None):
        """Normalized noisy images (B, box, box) for conformations ``theta`` (B,) in Å."""
        if nuisance is None:
            nuisance = self.sample_nuisance(len(theta), generator)
        images = self.noiseless(theta, nuisance)
        images = add_noise(images, nuisance["snr"], self.mask, generator)
        return normalize(images)

    def sample(self, n: int, generator: torch.Generator | None = None):
        """``n`` joint draws: θ (n,) and images (n, box, box)."""
        theta = self.sample_theta(n, generator)
        return theta, self.simulate(theta, generator)
