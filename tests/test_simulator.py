import math

import numpy as np
import pytest
import torch

from cryoflow.simulator import (
    Priors,
    Simulator,
    add_noise,
    circular_mask,
    interpolate_coords,
    project_gaussians_exact,
    project_gaussians_fourier,
    uniform_rotations,
)


def test_rotations_are_proper_and_haar_uniform():
    r = uniform_rotations(20000, torch.Generator().manual_seed(0), dtype=torch.float64)
    eye = torch.eye(3, dtype=torch.float64)
    assert torch.allclose(r @ r.transpose(1, 2), eye.expand_as(r), atol=1e-10)
    assert torch.allclose(torch.linalg.det(r), torch.ones(len(r), dtype=torch.float64), atol=1e-10)
    # Haar measure: each entry has mean 0 and variance 1/3; the rotated z axis is uniform on the sphere,
    # so its z component is uniform on [-1, 1].
    assert r.mean(0).abs().max() < 0.02
    assert torch.allclose((r**2).mean(0), torch.full((3, 3), 1 / 3, dtype=torch.float64), atol=0.01)
    z = r[:, 2, 2].numpy()
    hist, _ = np.histogram(z, bins=10, range=(-1, 1))
    assert np.all(np.abs(hist / len(z) - 0.1) < 0.01)


def test_single_bead_projects_to_analytic_gaussian():
    box, pixel, sigma = 64, 1.5, 3.0
    position = torch.tensor([[[4.2, -7.1, 10.0]]], dtype=torch.float64)
    image = project_gaussians_exact(position, torch.tensor([50.0], dtype=torch.float64), sigma, box, pixel)[0]
    axis = (np.arange(box) - box // 2) * pixel
    x, y = np.meshgrid(axis, axis, indexing="xy")
    expected = 50.0 * pixel**2 * np.exp(-((x - 4.2) ** 2 + (y + 7.1) ** 2) / (2 * sigma**2)) / (2 * math.pi * sigma**2)
    np.testing.assert_allclose(image.numpy(), expected, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("oversample", [1, 2])
def test_projections_integrate_to_total_weight(oversample):
    g = torch.Generator().manual_seed(1)
    coords = torch.randn(4, 300, 3, generator=g) * 15
    weights = torch.rand(300, generator=g) * 50 + 30
    exact = project_gaussians_exact(coords, weights, 2.0, 128, 1.0)
    fast = torch.fft.irfft2(project_gaussians_fourier(coords, weights, 2.0, 128, 1.0, oversample), s=(128, 128))
    assert torch.allclose(exact.sum((1, 2)), weights.sum().expand(4), rtol=1e-4)
    assert torch.allclose(fast.sum((1, 2)), weights.sum().expand(4), rtol=1e-4)


@pytest.mark.parametrize("box,pixel,sigma", [(64, 2.0, 2.0), (128, 1.0, 2.0), (128, 1.0, 1.0)])
def test_fourier_projection_matches_exact_within_one_percent(box, pixel, sigma):
    g = torch.Generator().manual_seed(2)
    coords = torch.randn(8, 1207, 3, generator=g) * 12
    weights = torch.rand(1207, generator=g) + 0.5
    exact = project_gaussians_exact(coords, weights, sigma, box, pixel)
    fast = torch.fft.irfft2(project_gaussians_fourier(coords, weights, sigma, box, pixel, 2), s=(box, box))
    assert ((fast - exact).norm() / exact.norm()).item() < 0.01


def test_interpolation_hits_templates_and_midpoints():
    coords = torch.randn(4, 10, 3)
    theta = torch.tensor([-3.0, -1.0, 0.0, 2.0])
    np.testing.assert_allclose(interpolate_coords(coords, theta, theta), coords, atol=1e-6)
    mid = interpolate_coords(coords, theta, torch.tensor([1.0]))
    np.testing.assert_allclose(mid[0], 0.5 * (coords[2] + coords[3]), atol=1e-6)


def test_noise_level_follows_snr_definition():
    g = torch.Generator().manual_seed(3)
    signal = project_gaussians_exact(torch.randn(64, 200, 3, generator=g) * 8, torch.ones(200), 2.0, 64, 1.0)
    mask = circular_mask(64, 20.0)
    snr = torch.full((64,), 0.1)
    noisy = add_noise(signal, snr, mask, g)
    measured = signal[:, mask].var(dim=1) / (noisy - signal).var(dim=(1, 2))
    assert measured.mean().item() == pytest.approx(0.1, rel=0.02)


@pytest.fixture(scope="module")
def small_simulator():
    g = torch.Generator().manual_seed(4)
    base = torch.randn(50, 3, generator=g) * 10
    templates = torch.stack([base * (1 + 0.05 * k) for k in range(-2, 3)])
    priors = Priors(theta_range_A=(-2.0, 2.0), shift_max_A=3.0, snr_range=(0.1, 1.0), mask_radius_A=40.0)
    return Simulator(templates, torch.arange(-2.0, 3.0), torch.ones(50), 48, 2.0, priors)


def test_simulated_images_are_normalized_and_reproducible(small_simulator):
    theta_a, images_a = small_simulator.sample(16, torch.Generator().manual_seed(7))
    theta_b, images_b = small_simulator.sample(16, torch.Generator().manual_seed(7))
    assert images_a.shape == (16, 48, 48)
    assert torch.equal(theta_a, theta_b) and torch.equal(images_a, images_b)
    assert torch.allclose(images_a.mean((1, 2)), torch.zeros(16), atol=1e-5)
    assert torch.allclose(images_a.std((1, 2)), torch.ones(16), atol=1e-4)
    assert theta_a.min() >= -2.0 and theta_a.max() <= 2.0


def test_ctf_flips_contrast_beyond_first_zero(small_simulator):
    """A projection's spectrum times the CTF: the simulator's noiseless image is the projection filtered by it."""
    sim = small_simulator
    nuisance = sim.sample_nuisance(2, torch.Generator().manual_seed(8))
    nuisance["b_factor_A2"][:] = 0.0
    image = sim.noiseless(torch.zeros(2), nuisance)
    # the CTF is ~0.1 at zero frequency: the image integrates to 10 % of the mass
    assert image.sum((1, 2)) / sim.weights.sum() == pytest.approx(torch.full((2,), 0.1), rel=1e-3)
