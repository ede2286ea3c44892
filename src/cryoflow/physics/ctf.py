"""Contrast transfer function, RELION/CTFFIND convention.

    χ(s) = π λ Δf(α) s² − (π/2) C_s λ³ s⁴ + φ + arctan(A / √(1 − A²))
    CTF(s) = sin χ(s) · exp(−B s² / 4)

with Δf(α) = (Δf_U + Δf_V)/2 + (Δf_U − Δf_V)/2 · cos(2(α − α_ast)), defocus
positive for underfocus, s in 1/Å. The sign is that of RELION's particle
images (protein white after contrast inversion): CTF > 0 at low frequency.
All functions take torch tensors (or floats) and broadcast.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields

import torch
from jaxtyping import Float
from torch import Tensor

Scalar = float | torch.Tensor  # a number, or a tensor that broadcasts against the frequency grid


def electron_wavelength_A(voltage_kV: float | torch.Tensor) -> float | torch.Tensor:
    """Relativistic electron wavelength in Å (0.01969 Å at 300 kV)."""
    volts = voltage_kV * 1e3
    denom = volts * (1.0 + 0.978466e-6 * volts)
    return 12.2642598 / (denom**0.5)


def fourier_frequencies(
    box: int, pixel_size_A: float, device=None, dtype=torch.float32, rfft: bool = True
) -> tuple[Float[Tensor, "box fx"], Float[Tensor, "box fx"]]:
    """Spatial frequencies (s_y, s_x) in 1/Å of an (r)fft2 layout, each (box, box//2+1) or (box, box)."""
    fy = torch.fft.fftfreq(box, d=pixel_size_A, device=device, dtype=dtype)
    fx = torch.fft.rfftfreq(box, d=pixel_size_A, device=device, dtype=dtype) if rfft else fy
    s_y, s_x = torch.meshgrid(fy, fx, indexing="ij")
    return s_y, s_x


def amplitude_contrast_phase(amplitude_contrast: Scalar) -> Scalar:
    """The phase (rad) that amplitude contrast A adds to χ: arctan(A / √(1 − A²))."""
    if isinstance(amplitude_contrast, torch.Tensor):
        return torch.atan(amplitude_contrast / torch.sqrt(1.0 - amplitude_contrast**2))
    return math.atan(amplitude_contrast / math.sqrt(1.0 - amplitude_contrast**2))


@dataclass(frozen=True)
class CTF:
    """One CTF's parameters: floats, or tensors that broadcast against the frequency grid (per image: (B, 1, 1)).

    Plain numbers are checked here (finite defocus, positive voltage, amplitude contrast in [0, 1)); tensors
    are taken as they are, so that building a batch's CTF on a GPU never waits for the device.
    """

    defocus_u_A: Scalar
    defocus_v_A: Scalar
    astigmatism_angle_deg: Scalar
    voltage_kV: Scalar
    cs_mm: Scalar
    amplitude_contrast: Scalar
    phase_shift_deg: Scalar = 0.0
    b_factor_A2: Scalar = 0.0

    def __post_init__(self) -> None:
        for name in ("defocus_u_A", "defocus_v_A", "astigmatism_angle_deg", "cs_mm", "phase_shift_deg", "b_factor_A2"):
            value = getattr(self, name)
            if not isinstance(value, torch.Tensor) and not math.isfinite(value):
                raise ValueError(f"CTF {name} is {value}, not a finite number")
        if not isinstance(self.voltage_kV, torch.Tensor) and not self.voltage_kV > 0:
            raise ValueError(f"CTF voltage_kV is {self.voltage_kV}; it must be positive")
        amplitude = self.amplitude_contrast
        if not isinstance(amplitude, torch.Tensor) and not 0.0 <= amplitude < 1.0:
            raise ValueError(f"CTF amplitude_contrast is {amplitude}; it must lie in [0, 1)")

    @classmethod
    def per_image(cls, nuisance: Mapping[str, torch.Tensor]) -> CTF:
        """The CTFs of a batch whose parameters are (B,) tensors in ``nuisance`` (``CTF_PARAMETERS``), as (B, 1, 1)."""
        return cls(**{key: nuisance[key][:, None, None] for key in CTF_PARAMETERS})

    @classmethod
    def unastigmatic(cls, defocus_A: float, optics: Mapping[str, float], b_factor_A2: float = 0.0) -> CTF:
        """A CTF without astigmatism or phase plate in an optics group (``voltage_kV``, ``cs_mm``,
        ``amplitude_contrast``)."""
        return cls(
            defocus_A,
            defocus_A,
            0.0,
            optics["voltage_kV"],
            optics["cs_mm"],
            optics["amplitude_contrast"],
            b_factor_A2=b_factor_A2,
        )


def ctf(s_y: Float[Tensor, "*grid"], s_x: Float[Tensor, "*grid"], params: CTF) -> Float[Tensor, "*shape"]:
    """CTF at frequencies (s_y, s_x) in 1/Å; the parameters broadcast against the grid (the result has the
    broadcast shape)."""
    wavelength = electron_wavelength_A(params.voltage_kV)
    s2 = s_x**2 + s_y**2
    alpha = torch.atan2(s_y, s_x)
    angle = params.astigmatism_angle_deg * (math.pi / 180.0)
    mean, half_difference = (
        0.5 * (params.defocus_u_A + params.defocus_v_A),
        0.5 * (params.defocus_u_A - params.defocus_v_A),
    )
    defocus = mean + half_difference * torch.cos(2.0 * (alpha - angle))
    cs_A = params.cs_mm * 1e7
    amplitude = torch.as_tensor(params.amplitude_contrast, dtype=s2.dtype, device=s2.device)
    chi = (
        math.pi * wavelength * defocus * s2
        - 0.5 * math.pi * cs_A * wavelength**3 * s2**2
        + params.phase_shift_deg * (math.pi / 180.0)
        + amplitude_contrast_phase(amplitude)
    )
    return torch.sin(chi) * torch.exp(-0.25 * params.b_factor_A2 * s2)


# a nuisance dict's per-image CTF parameters (the simulator's keys), in the order of CTF's fields
CTF_PARAMETERS = tuple(field.name for field in fields(CTF))
RECORDED_CTF = CTF_PARAMETERS[:-1]  # what a particle's STAR row or .cs record gives (no B-factor)


def per_image_ctf(s_y: Float[Tensor, "y x"], s_x: Float[Tensor, "y x"], nuisance: dict) -> Float[Tensor, "batch y x"]:
    """CTF (B, …) of images whose parameters are (B,) tensors in ``nuisance`` (``CTF_PARAMETERS``)."""
    return ctf(s_y, s_x, CTF.per_image(nuisance))


def first_zero_frequency(defocus_A: float, voltage_kV: float, cs_mm: float, amplitude_contrast: float) -> float:
    """Frequency (1/Å) of the first CTF zero of an unastigmatic CTF (χ = π), solved analytically."""
    wavelength = electron_wavelength_A(voltage_kV)
    w = amplitude_contrast_phase(amplitude_contrast)
    a = 0.5 * math.pi * cs_mm * 1e7 * wavelength**3
    b = math.pi * wavelength * defocus_A
    c = math.pi - w
    # a u² - b u + c = 0 with u = s²; the smaller positive root
    if a == 0:
        return math.sqrt(c / b)
    u = (b - math.sqrt(b * b - 4 * a * c)) / (2 * a)
    return math.sqrt(u)
