"""Held-out simulations of the validate rule, drawn from seeds the config gives.

One place for the seed offsets, so the validation, the likelihood reference
and anything else that needs "the k-th fixed-SNR set" draw the same images.
"""

from __future__ import annotations

import torch

# offsets added to the config's seed, one per kind of held-out set
CALIBRATION_OFFSET = 104729
JUNK_OFFSET = 15485863
FIXED_SNR_OFFSET = 7919


@torch.no_grad()
def calibration_set(simulator, n: int, seed: int):
    """θ (n,), nuisances and images (n, box, box) drawn from the prior: the calibration set."""
    generator = torch.Generator(device=simulator.device).manual_seed(seed + CALIBRATION_OFFSET)
    theta = simulator.sample_theta(n, generator)
    nuisance = simulator.sample_nuisance(n, generator)
    return theta, nuisance, simulator.simulate(theta, generator, nuisance)


def junk_generator(simulator, seed: int) -> torch.Generator:
    return torch.Generator(device=simulator.device).manual_seed(seed + JUNK_OFFSET)


@torch.no_grad()
def fixed_snr_set(simulator, snr: float, k: int, n: int, seed: int):
    """The ``k``-th fixed-SNR set (Fig. 2C): θ, poses and CTFs from the prior, every image at ``snr``."""
    generator = torch.Generator(device=simulator.device).manual_seed(seed + FIXED_SNR_OFFSET * (k + 1))
    theta = simulator.sample_theta(n, generator)
    nuisance = simulator.sample_nuisance(n, generator)
    nuisance["snr"] = torch.full_like(nuisance["snr"], float(snr))
    return theta, nuisance, simulator.simulate(theta, generator, nuisance)
