"""Forward model: cryo-EM particle images of templates along θ.

Image formation for one particle with conformation θ:

1. the template at θ (``cryoflow.physics.projection``): atomic coordinates
   interpolated linearly between the neighbouring templates, or the blend of
   the neighbouring density maps;
2. a rotation, uniform on SO(3) (normalized Gaussian quaternion, the Haar
   measure) or limited to a cone around the template's orientation, and an
   in-plane shift in Å;
3. projection along z: Gaussian beads of width σ (Å, fixed or drawn per image)
   weighted by electron counts, or a Fourier slice of a map; pixel values are
   electrons per pixel, so an image sums to the projected electrons;
4. CTF (``cryoflow.physics.ctf``): defocus U/V and astigmatism angle, phase shift,
   B-factor envelope, voltage, Cs and amplitude contrast of an optics group;
5. Gaussian noise, white or with a given power spectrum, at a signal-to-noise
   ratio defined as the variance of the noiseless image inside a circular mask
   of radius ``mask_radius_A`` over the noise variance, SNR drawn log-uniformly;
6. per-image normalization to zero mean and unit variance.

Projection, CTF and noise are Fourier multiplies on the tensors' device;
nothing returns to the host.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from cryoflow.physics.ctf import fourier_frequencies, per_image_ctf
from cryoflow.physics.theta import bounds


def quaternion_to_matrix(q: Float[Tensor, "*batch 4"]) -> Float[Tensor, "*batch 3 3"]:
    """Rotation matrices (B, 3, 3) from unit quaternions (B, 4) in (w, x, y, z) order."""
    w, x, y, z = q.unbind(-1)
    rows = (
        (1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)),
        (2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)),
        (2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)),
    )
    return torch.stack([torch.stack(row, dim=-1) for row in rows], dim=-2)


def uniform_rotations(n: int, generator: torch.Generator | None = None, device=None, dtype=torch.float32):
    """``n`` rotation matrices drawn uniformly (Haar measure) from SO(3)."""
    q = torch.randn(n, 4, generator=generator, device=device, dtype=dtype)
    q = q / q.norm(dim=-1, keepdim=True)
    return quaternion_to_matrix(q)


def circular_mask(box: int, radius_px: float, device=None, dtype=torch.float32) -> Bool[Tensor, "box box"]:
    """Boolean (box, box) disc of ``radius_px`` around pixel (box//2, box//2)."""
    axis = torch.arange(box, device=device, dtype=dtype) - box // 2
    return (axis[:, None] ** 2 + axis[None, :] ** 2) <= radius_px**2


def masked_variance(images: Float[Tensor, "batch y x"], mask: Bool[Tensor, "y x"]) -> Float[Tensor, " batch"]:
    """Unbiased variance (B,) of each image's pixels inside a boolean ``mask``, as two matrix-vector products."""
    weights = mask.reshape(-1).to(images.dtype)
    count = weights.sum()
    flat = images.reshape(len(images), -1)
    total, squares = flat @ weights, (flat * flat) @ weights
    return ((squares - total * total / count) / (count - 1)).clamp_min(0.0)


def add_noise(
    images: Float[Tensor, "batch y x"],
    snr: Float[Tensor, " batch"],
    mask: Bool[Tensor, "y x"],
    noise: Float[Tensor, "batch y x"],
) -> Float[Tensor, "batch y x"]:
    """Add unit-variance ``noise`` scaled to variance var(signal inside ``mask``) / snr per image."""
    return images + noise * torch.sqrt(masked_variance(images, mask) / snr)[:, None, None]


def normalize(images: Float[Tensor, "*batch y x"]) -> Float[Tensor, "*batch y x"]:
    """Zero mean, unit standard deviation per image (a constant image is only centred).

    Training images and experimental particles (``cryoflow.io.particles``) both
    go through this one function, so they are normalized identically.
    """
    var, mean = torch.var_mean(images, dim=(-2, -1), keepdim=True)
    std = var.sqrt()
    return (images - mean) / torch.where(std > 0, std, torch.ones_like(std))


def rotations_near_identity(
    n: int, max_angle_deg: float, generator: torch.Generator | None = None, device=None, dtype=torch.float32
) -> torch.Tensor:
    """``n`` rotations drawn from the Haar measure restricted to angles ≤ ``max_angle_deg`` from the identity.

    Under the Haar measure the rotation axis is uniform on the sphere and the
    angle ω has density ∝ 1 − cos ω; ω is drawn by inverting its CDF
    ∝ ω − sin ω by bisection (on the device, fixed iterations).
    """
    limit = math.radians(min(max(max_angle_deg, 0.0), 180.0))
    axis = torch.randn(n, 3, generator=generator, device=device, dtype=dtype)
    axis = axis / axis.norm(dim=-1, keepdim=True)
    u = torch.rand(n, generator=generator, device=device, dtype=dtype) * (limit - math.sin(limit))
    low, high = torch.zeros_like(u), torch.full_like(u, limit)
    for _ in range(40):
        mid = 0.5 * (low + high)
        below = mid - torch.sin(mid) < u
        low, high = torch.where(below, mid, low), torch.where(below, high, mid)
    omega = 0.5 * (low + high)
    q = torch.cat([torch.cos(omega / 2)[:, None], torch.sin(omega / 2)[:, None] * axis], dim=-1)
    return quaternion_to_matrix(q)


def noise_filter(
    box: int, pixel_size_A: float, frequency_per_A, power, device=None, dtype=torch.float32
) -> torch.Tensor:
    """Amplitude filter on the rfft2 grid that gives white noise the radial ``power`` spectrum.

    ``power`` is sampled at ``frequency_per_A`` (increasing; linear
    interpolation, held constant beyond the ends) and scaled so that filtered
    unit-variance white noise keeps unit variance.
    """
    frequency = torch.as_tensor(frequency_per_A, dtype=torch.float64)
    power = torch.as_tensor(power, dtype=torch.float64)
    if len(frequency) < 2 or torch.any(torch.diff(frequency) <= 0) or torch.any(power < 0) or power.max() <= 0:
        raise ValueError("noise power spectrum needs ≥ 2 increasing frequencies and non-negative, non-zero power")
    s_y, s_x = fourier_frequencies(box, pixel_size_A, dtype=torch.float64, rfft=False)
    s = torch.sqrt(s_x**2 + s_y**2).clamp(frequency[0], frequency[-1])
    upper = torch.searchsorted(frequency, s.contiguous(), right=True).clamp(1, len(frequency) - 1)
    frac = (s - frequency[upper - 1]) / (frequency[upper] - frequency[upper - 1])
    full = power[upper - 1] + frac * (power[upper] - power[upper - 1])
    full = full / full.mean()  # Parseval: variance of the filtered noise = mean of |H|² over the full grid
    return torch.sqrt(full[:, : box // 2 + 1]).to(device=device, dtype=dtype)


@dataclass
class Priors:
    """Prior ranges of θ and the nuisance parameters (all ranges inclusive, units in the names).

    ``theta_range_A`` is [low, high], or two such pairs for a 2-D θ (``cryoflow.physics.theta``).
    ``pose_max_angle_deg``: ``None`` for uniform rotations on SO(3), 0 for the
    template's own orientation, otherwise rotations within that angle of it.
    ``bead_sigma_range_A`` (atomic templates) is drawn uniformly per image.
    ``optics`` lists optics groups ``{voltage_kV, cs_mm, amplitude_contrast,
    weight}``; each image draws one group with probability ∝ weight.
    No field has a default: the config's come from the schema (``cryoflow.workflow.from_config.resolve_priors``).
    """

    theta_range_A: Sequence[float] | Sequence[Sequence[float]]  # [low, high], or one pair per θ coordinate
    shift_max_A: float
    pose_max_angle_deg: float | None
    defocus_range_A: tuple[float, float]
    astigmatism_max_A: float
    phase_shift_range_deg: tuple[float, float]
    b_factor_range_A2: tuple[float, float]
    snr_range: tuple[float, float]
    bead_sigma_range_A: tuple[float, float]
    mask_radius_A: float | None
    optics: list[dict]


def _uniform(n, low, high, generator, device):
    return low + (high - low) * torch.rand(n, generator=generator, device=device)


class Simulator:
    """Draws (θ, image) pairs from the prior and the forward model, on one device.

    ``templates`` is a ``cryoflow.physics.projection.AtomTemplates`` or
    ``VolumeTemplates``; ``noise_filter`` (rfft2 grid, from ``noise_filter``)
    colours the noise, white when ``None``.
    """

    def __init__(self, templates, box_px: int, pixel_size_A: float, priors: Priors, noise_filter=None):
        self.templates = templates
        self.device = templates.device
        self.box = int(box_px)
        self.pixel_size_A = float(pixel_size_A)
        self.priors = priors
        radius_A = priors.mask_radius_A or 0.5 * self.box * self.pixel_size_A
        self.mask = circular_mask(self.box, radius_A / self.pixel_size_A, device=self.device)
        self.s_y, self.s_x = fourier_frequencies(self.box, self.pixel_size_A, device=self.device)
        self.noise_filter = None if noise_filter is None else torch.as_tensor(noise_filter, device=self.device)
        optics = priors.optics
        self._optics = {
            key: torch.tensor([float(g[key]) for g in optics], device=self.device)
            for key in ("voltage_kV", "cs_mm", "amplitude_contrast", "weight")
        }

    def sample_theta(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """θ uniform on the prior range: (n,) for 1-D θ, (n, 2) for a 2-D range."""
        ranges = bounds(self.priors.theta_range_A)
        if len(ranges) == 1:
            return _uniform(n, float(ranges[0, 0]), float(ranges[0, 1]), generator, self.device)
        low = torch.as_tensor(ranges[:, 0], dtype=torch.float32, device=self.device)
        high = torch.as_tensor(ranges[:, 1], dtype=torch.float32, device=self.device)
        return low + (high - low) * torch.rand(n, len(ranges), generator=generator, device=self.device)

    def sample_rotations(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        if self.priors.pose_max_angle_deg is None:
            return uniform_rotations(n, generator, self.device)
        return rotations_near_identity(n, self.priors.pose_max_angle_deg, generator, self.device)

    def sample_nuisance(self, n: int, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Pose, shift, CTF, bead width and noise parameters for ``n`` images."""
        p = self.priors
        defocus = _uniform(n, *p.defocus_range_A, generator, self.device)
        astig = _uniform(n, -p.astigmatism_max_A, p.astigmatism_max_A, generator, self.device)
        log_snr = _uniform(n, math.log(p.snr_range[0]), math.log(p.snr_range[1]), generator, self.device)
        group = torch.multinomial(self._optics["weight"], n, replacement=True, generator=generator)
        return {
            "rotation": self.sample_rotations(n, generator),
            "shift_A": _uniform((n, 2), -p.shift_max_A, p.shift_max_A, generator, self.device),
            "defocus_u_A": defocus + astig,
            "defocus_v_A": defocus - astig,
            "astigmatism_angle_deg": _uniform(n, 0.0, 180.0, generator, self.device),
            "phase_shift_deg": _uniform(n, *p.phase_shift_range_deg, generator, self.device),
            "b_factor_A2": _uniform(n, *p.b_factor_range_A2, generator, self.device),
            "bead_sigma_A": _uniform(n, *p.bead_sigma_range_A, generator, self.device),
            "voltage_kV": self._optics["voltage_kV"][group],
            "cs_mm": self._optics["cs_mm"][group],
            "amplitude_contrast": self._optics["amplitude_contrast"][group],
            "snr": torch.exp(log_snr),
        }

    def transfer(self, nuisance: dict[str, torch.Tensor]) -> torch.Tensor:
        """Per-image CTF (B, box, box//2+1) on the rfft2 grid."""
        return per_image_ctf(self.s_y, self.s_x, nuisance)

    def noiseless(self, theta: torch.Tensor, nuisance: dict[str, torch.Tensor]) -> torch.Tensor:
        """CTF-modulated projections (B, box, box) in electrons per pixel, before noise."""
        sigma = nuisance["bead_sigma_A"][:, None, None]
        spectrum = self.templates.spectrum(
            theta, nuisance["rotation"], nuisance["shift_A"], self.box, self.pixel_size_A, sigma
        )
        return torch.fft.irfft2(spectrum * self.transfer(nuisance), s=(self.box, self.box))

    def noise(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Unit-variance Gaussian noise (n, box, box), white or coloured by ``noise_filter``."""
        white = torch.randn(n, self.box, self.box, generator=generator, device=self.device)
        if self.noise_filter is None:
            return white
        return torch.fft.irfft2(torch.fft.rfft2(white) * self.noise_filter, s=(self.box, self.box))

    def simulate(self, theta: torch.Tensor, generator: torch.Generator | None = None, nuisance=None):
        """Normalized noisy images (B, box, box) for conformations ``theta`` (B,) or (B, 2) in Å."""
        if nuisance is None:
            nuisance = self.sample_nuisance(len(theta), generator)
        images = self.noiseless(theta, nuisance)
        images = add_noise(images, nuisance["snr"], self.mask, self.noise(len(theta), generator))
        return normalize(images)

    def sample(self, n: int, generator: torch.Generator | None = None):
        """``n`` joint draws: θ (n,) or (n, 2) and images (n, box, box)."""
        theta = self.sample_theta(n, generator)
        return theta, self.simulate(theta, generator)
