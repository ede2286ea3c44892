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

import torch


def electron_wavelength_A(voltage_kV: float | torch.Tensor) -> float | torch.Tensor:
    """Relativistic electron wavelength in Å (0.01969 Å at 300 kV)."""
    volts = voltage_kV * 1e3
    denom = volts * (1.0 + 0.978466e-6 * volts)
    return 12.2642598 / (denom**0.5)


def fourier_frequencies(box: int, pixel_size_A: float, device=None, dtype=torch.float32, rfft: bool = True):
    """Spatial frequencies (s_y, s_x) in 1/Å of an (r)fft2 layout, each (box, box//2+1) or (box, box)."""
    fy = torch.fft.fftfreq(box, d=pixel_size_A, device=device, dtype=dtype)
    fx = torch.fft.rfftfreq(box, d=pixel_size_A, device=device, dtype=dtype) if rfft else fy
    return torch.meshgrid(fy, fx, indexing="ij")


def ctf(
    s_y: torch.Tensor,
    s_x: torch.Tensor,
    defocus_u_A,
    defocus_v_A,
    astigmatism_angle_deg,
    voltage_kV,
    cs_mm,
    amplitude_contrast,
    phase_shift_deg=0.0,
    b_factor_A2=0.0,
) -> torch.Tensor:
    """CTF at frequencies (s_y, s_x) in 1/Å; per-image parameters broadcast as (B, 1, 1)."""
    wavelength = electron_wavelength_A(voltage_kV)
    s2 = s_x**2 + s_y**2
    alpha = torch.atan2(s_y, s_x)
    angle = astigmatism_angle_deg * (math.pi / 180.0)
    defocus = 0.5 * (defocus_u_A + defocus_v_A) + 0.5 * (defocus_u_A - defocus_v_A) * torch.cos(2.0 * (alpha - angle))
    cs_A = cs_mm * 1e7
    amplitude = torch.as_tensor(amplitude_contrast, dtype=s2.dtype, device=s2.device)
    amplitude_phase = torch.atan(amplitude / torch.sqrt(1.0 - amplitude**2))
    chi = (
        math.pi * wavelength * defocus * s2
        - 0.5 * math.pi * cs_A * wavelength**3 * s2**2
        + phase_shift_deg * (math.pi / 180.0)
        + amplitude_phase
    )
    return torch.sin(chi) * torch.exp(-0.25 * b_factor_A2 * s2)


# a nuisance dict's per-image CTF parameters (the simulator's keys), in ``ctf``'s argument order
CTF_PARAMETERS = (
    "defocus_u_A",
    "defocus_v_A",
    "astigmatism_angle_deg",
    "voltage_kV",
    "cs_mm",
    "amplitude_contrast",
    "phase_shift_deg",
    "b_factor_A2",
)
RECORDED_CTF = CTF_PARAMETERS[:-1]  # what a particle's STAR row or .cs record gives (no B-factor)


def per_image_ctf(s_y: torch.Tensor, s_x: torch.Tensor, nuisance: dict) -> torch.Tensor:
    """CTF (B, …) of images whose parameters are (B,) tensors in ``nuisance`` (``CTF_PARAMETERS``)."""
    return ctf(s_y, s_x, *(nuisance[key][:, None, None] for key in CTF_PARAMETERS))


def first_zero_frequency(defocus_A: float, voltage_kV: float, cs_mm: float, amplitude_contrast: float) -> float:
    """Frequency (1/Å) of the first CTF zero of an unastigmatic CTF (χ = π), solved analytically."""
    wavelength = electron_wavelength_A(voltage_kV)
    w = math.atan(amplitude_contrast / math.sqrt(1.0 - amplitude_contrast**2))
    a = 0.5 * math.pi * cs_mm * 1e7 * wavelength**3
    b = math.pi * wavelength * defocus_A
    c = math.pi - w
    # a u² - b u + c = 0 with u = s²; the smaller positive root
    if a == 0:
        return math.sqrt(c / b)
    u = (b - math.sqrt(b * b - 4 * a * c)) / (2 * a)
    return math.sqrt(u)
