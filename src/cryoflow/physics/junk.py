"""Images that hold no centred particle, for junk-aware training (``train.junk_fraction``).

A window slid over a micrograph, or a bad pick, shows empty ice, ice or
carbon texture, aggregates, or a particle far from the centre. The model
never sees those when it learns q(θ | image), so it answers with some θ
anyway. Training a "particle present" output on a mix of particle images
and these four kinds lets it say "not a particle" instead:

* ``empty``: the simulator's own noise (white or coloured), nothing else;
* ``ice``: a smooth random texture (correlation length 20–200 Å) through the
  image's CTF, at 0.02–2 times the noise variance, plus noise;
* ``aggregate``: two to six Gaussian blobs (σ 4–20 Å) near the centre,
  through the CTF, at the prior's SNR;
* ``off_centre``: a particle from the prior whose centre lies between
  ``off_centre_min_A`` (just beyond the shift prior) and 0.75 box from the
  image centre, projected on a canvas twice the box and cropped. Windows
  slid over a micrograph then score highest where a particle is centred,
  not anywhere near it;
* ``edge``: the straight edge of a carbon film or thick ice at a random
  angle and offset (within 0.3 box of the centre), the film textured as
  ``ice``, through the CTF, at 0.05–2 times the noise variance.

Every image is normalized like a particle image (zero mean, unit variance).
"""

from __future__ import annotations

import math

import torch

from cryoflow.physics.ctf import fourier_frequencies, per_image_ctf
from cryoflow.physics.simulator import Simulator, _uniform, add_noise, normalize

KINDS = ("empty", "ice", "aggregate", "off_centre", "edge")


def off_centre_min_A(simulator: Simulator) -> float:
    """Nearest centre of an off-centre particle: 2.5 shift ranges (the prior's corner is at 1.41) or four
    pixels, whichever is further."""
    return max(2.5 * simulator.priors.shift_max_A, 4.0 * simulator.pixel_size_A)


def _log_uniform(n, low, high, generator, device):
    return torch.exp(_uniform(n, math.log(low), math.log(high), generator, device))


def _ctf_filtered(simulator: Simulator, images: torch.Tensor, nuisance: dict) -> torch.Tensor:
    return torch.fft.irfft2(torch.fft.rfft2(images) * simulator.transfer(nuisance), s=images.shape[-2:])


def ice_texture(simulator: Simulator, n: int, generator=None) -> torch.Tensor:
    """Smooth random fields (n, box, box) of unit variance, power ∝ 1 / (1 + (s·L)²)², L 20–200 Å per image."""
    length = _log_uniform(n, 20.0, 200.0, generator, simulator.device)[:, None, None]
    s = torch.sqrt(simulator.s_x**2 + simulator.s_y**2)
    white = torch.randn(n, simulator.box, simulator.box, generator=generator, device=simulator.device)
    field = torch.fft.irfft2(torch.fft.rfft2(white) / (1.0 + (s * length) ** 2), s=(simulator.box, simulator.box))
    return field / field.std(dim=(-2, -1), keepdim=True).clamp_min(1e-12)


def aggregates(simulator: Simulator, n: int, generator=None) -> torch.Tensor:
    """Sums of two to six Gaussian blobs (σ 4–20 Å, random weights) within 40 % of the mask radius."""
    device, box, pixel = simulator.device, simulator.box, simulator.pixel_size_A
    radius_A = 0.4 * (simulator.priors.mask_radius_A or 0.5 * box * pixel)
    blobs = 6
    centre = _uniform((n, blobs, 2), -radius_A, radius_A, generator, device)
    sigma = _uniform((n, blobs), 4.0, 20.0, generator, device)
    weight = torch.rand(n, blobs, generator=generator, device=device)
    used = torch.arange(blobs, device=device)[None, :] < torch.randint(
        2, blobs + 1, (n, 1), generator=generator, device=device
    )
    weight = weight * used
    axis = (torch.arange(box, device=device, dtype=torch.float32) - box // 2) * pixel
    dy = axis[None, None, :, None] - centre[..., 0, None, None]
    dx = axis[None, None, None, :] - centre[..., 1, None, None]
    s2 = sigma[..., None, None] ** 2
    return (weight[..., None, None] * torch.exp(-0.5 * (dy**2 + dx**2) / s2)).sum(dim=1)


def carbon_edges(simulator: Simulator, n: int, generator=None) -> torch.Tensor:
    """Films (n, box, box) on one side of a straight edge at a random angle, within 0.3 box of the centre,
    each a constant with 30 % smooth texture (``ice_texture``)."""
    device, box, pixel = simulator.device, simulator.box, simulator.pixel_size_A
    angle = _uniform(n, 0.0, 2.0 * math.pi, generator, device)[:, None, None]
    offset = _uniform(n, -0.3, 0.3, generator, device)[:, None, None] * box * pixel
    axis = (torch.arange(box, device=device, dtype=torch.float32) - box // 2) * pixel
    across = torch.cos(angle) * axis[None, None, :] + torch.sin(angle) * axis[None, :, None] - offset
    return (across > 0).float() * (1.0 + 0.3 * ice_texture(simulator, n, generator))


def off_centre_particles(
    simulator: Simulator, n: int, nuisance: dict, generator=None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Noiseless CTF-modulated particles (n, box, box) centred ``off_centre_min_A`` to 0.75 box away, and the
    variance (n,) each would have inside the mask if it were centred (its noise reference)."""
    box, pixel = simulator.box, simulator.pixel_size_A
    canvas = 2 * box
    low, high = off_centre_min_A(simulator), 0.75 * box * pixel
    distance = _uniform(n, low, max(high, low), generator, simulator.device)
    angle = _uniform(n, 0.0, 2.0 * math.pi, generator, simulator.device)
    shift = torch.stack([distance * torch.cos(angle), distance * torch.sin(angle)], dim=-1)
    theta = simulator.sample_theta(n, generator)
    spectrum = simulator.templates.spectrum(
        theta, nuisance["rotation"], shift, canvas, pixel, nuisance["bead_sigma_A"][:, None, None]
    )
    s_y, s_x = fourier_frequencies(canvas, pixel, device=simulator.device)
    transfer = per_image_ctf(s_y, s_x, nuisance)
    full = torch.fft.irfft2(spectrum * transfer, s=(canvas, canvas))
    # the noise level a centred particle would get: its variance inside the mask, from the whole canvas
    mask_fraction = simulator.mask.float().mean() * box**2 / canvas**2
    reference_var = full.var(dim=(-2, -1)) / mask_fraction
    start = canvas // 2 - box // 2
    return full[:, start : start + box, start : start + box], reference_var


def junk_images(simulator: Simulator, n: int, generator=None) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` normalized images (n, box, box) without a centred particle, and their kind (n,) as indices of
    ``KINDS``, the kinds drawn with equal probability."""
    device = simulator.device
    kind = torch.randint(len(KINDS), (n,), generator=generator, device=device)
    nuisance = simulator.sample_nuisance(n, generator)
    noise = simulator.noise(n, generator)
    images = noise.clone()  # empty: noise alone
    for name in KINDS[1:]:  # each kind is made for its own images only
        rows = torch.nonzero(kind == KINDS.index(name)).flatten()
        if len(rows) == 0:
            continue
        count, picked = len(rows), {key: value[rows] for key, value in nuisance.items()}
        if name in ("ice", "edge"):
            field = (
                ice_texture(simulator, count, generator) if name == "ice" else carbon_edges(simulator, count, generator)
            )
            field = _ctf_filtered(simulator, field, picked)
            field = field / field.std(dim=(-2, -1), keepdim=True).clamp_min(1e-12)
            low = 0.02 if name == "ice" else 0.05
            ratio = _log_uniform(count, low, 2.0, generator, device).sqrt()[:, None, None]
            images[rows] = noise[rows] + ratio * field
        elif name == "aggregate":
            signal = _ctf_filtered(simulator, aggregates(simulator, count, generator), picked)
            images[rows] = add_noise(signal, picked["snr"], simulator.mask, noise[rows])
        else:  # off_centre
            signal, reference_var = off_centre_particles(simulator, count, picked, generator)
            images[rows] = signal + noise[rows] * torch.sqrt(reference_var / picked["snr"])[:, None, None]
    return normalize(images), kind


def junk_batch_size(batch_size: int, fraction: float) -> int:
    """Junk images in a training batch of ``batch_size``: at least one when ``fraction`` > 0, never all."""
    if fraction <= 0:
        return 0
    return min(batch_size - 1, max(1, int(round(fraction * batch_size))))
