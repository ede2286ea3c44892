import math

import jaxtyping
import numpy as np
import pytest
import torch
from simulation_helpers import make_priors

from cryoflow.physics.ctf import fourier_frequencies
from cryoflow.physics.projection import AtomTemplates, project_gaussians_exact
from cryoflow.physics.simulator import (
    Simulator,
    add_noise,
    circular_mask,
    noise_filter,
    rotations_near_identity,
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


def test_noise_level_follows_snr_definition():
    g = torch.Generator().manual_seed(3)
    signal = project_gaussians_exact(torch.randn(64, 200, 3, generator=g) * 8, torch.ones(200), 2.0, 64, 1.0)
    mask = circular_mask(64, 20.0)
    snr = torch.full((64,), 0.1)
    noisy = add_noise(signal, snr, mask, torch.randn(signal.shape, generator=g))
    measured = signal[:, mask].var(dim=1) / (noisy - signal).var(dim=(1, 2))
    assert measured.mean().item() == pytest.approx(0.1, rel=0.02)


@pytest.fixture(scope="module")
def small_simulator():
    g = torch.Generator().manual_seed(4)
    base = torch.randn(50, 3, generator=g) * 10
    templates = torch.stack([base * (1 + 0.05 * k) for k in range(-2, 3)])
    priors = make_priors(theta_range_A=(-2.0, 2.0), shift_max_A=3.0, snr_range=(0.1, 1.0), mask_radius_A=40.0)
    return Simulator(AtomTemplates(templates, torch.arange(-2.0, 3.0), torch.ones(50)), 48, 2.0, priors)


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
    assert image.sum((1, 2)) / sim.templates.total_electrons == pytest.approx(torch.full((2,), 0.1), rel=1e-3)


def rotation_angle_deg(r: torch.Tensor) -> torch.Tensor:
    trace = r.diagonal(dim1=-2, dim2=-1).sum(-1)
    return torch.rad2deg(torch.arccos(((trace - 1) / 2).clamp(-1, 1)))


def test_limited_poses_stay_within_the_cone_and_follow_the_haar_angle_law():
    g = torch.Generator().manual_seed(20)
    limited = rotations_near_identity(20000, 30.0, g, dtype=torch.float64)
    eye = torch.eye(3, dtype=torch.float64).expand_as(limited)
    assert torch.allclose(limited @ limited.transpose(1, 2), eye, atol=1e-10)
    angle = rotation_angle_deg(limited).numpy()
    assert angle.max() <= 30.0 + 1e-6
    # Haar measure restricted to ω ≤ 30°: P(ω ≤ 15°) = (x − sin x) at 15° over the same at 30°
    expected = (math.radians(15) - math.sin(math.radians(15))) / (math.radians(30) - math.sin(math.radians(30)))
    assert np.mean(angle <= 15.0) == pytest.approx(expected, abs=0.01)
    # the full range reproduces the uniform law: P(ω ≤ 90°) = (π/2 − 1)/π
    full = rotation_angle_deg(rotations_near_identity(20000, 180.0, g, dtype=torch.float64)).numpy()
    haar = rotation_angle_deg(uniform_rotations(20000, g, dtype=torch.float64)).numpy()
    assert np.mean(full <= 90) == pytest.approx((math.pi / 2 - 1) / math.pi, abs=0.01)
    assert np.mean(haar <= 90) == pytest.approx((math.pi / 2 - 1) / math.pi, abs=0.01)
    fixed = rotations_near_identity(5, 0.0, g, dtype=torch.float64)
    assert torch.allclose(fixed, torch.eye(3, dtype=torch.float64).expand_as(fixed))


def test_coloured_noise_has_the_requested_spectrum_and_unit_variance(small_simulator):
    frequency = np.linspace(0.0, 0.5, 50)
    power = 1.0 + 8.0 * np.exp(-((frequency / 0.06) ** 2))
    colour = noise_filter(48, 2.0, frequency, power)
    sim = Simulator(small_simulator.templates, 48, 2.0, small_simulator.priors, noise_filter=colour)
    noise = sim.noise(4000, torch.Generator().manual_seed(21))
    assert noise.var().item() == pytest.approx(1.0, rel=0.02)
    measured = (torch.fft.rfft2(noise).abs() ** 2).mean(0) / 48**2
    s_y, s_x = fourier_frequencies(48, 2.0)
    s = torch.sqrt(s_x**2 + s_y**2)
    target = torch.as_tensor(np.interp(s.numpy(), frequency, power), dtype=torch.float32)
    ratio = measured / target
    ratio = ratio / ratio.mean()
    assert ratio.std().item() < 0.05
    low, high = measured[s < 0.03].mean(), measured[s > 0.2].mean()
    assert (low / high).item() == pytest.approx(9.0, rel=0.1)


def test_optics_groups_drawn_by_weight(small_simulator):
    groups = [
        {"voltage_kV": 300.0, "cs_mm": 2.7, "amplitude_contrast": 0.1, "weight": 3},
        {"voltage_kV": 200.0, "cs_mm": 1.4, "amplitude_contrast": 0.07, "weight": 1},
    ]
    priors = make_priors(theta_range_A=(-2.0, 2.0), optics=groups, phase_shift_range_deg=(20.0, 90.0))
    sim = Simulator(small_simulator.templates, 48, 2.0, priors)
    nuisance = sim.sample_nuisance(8000, torch.Generator().manual_seed(22))
    assert (nuisance["voltage_kV"] == 300.0).float().mean().item() == pytest.approx(0.75, abs=0.02)
    at_200 = nuisance["voltage_kV"] == 200.0
    assert torch.all(nuisance["cs_mm"][at_200] == 1.4) and torch.all(nuisance["cs_mm"][~at_200] == 2.7)
    assert nuisance["phase_shift_deg"].min() >= 20.0 and nuisance["phase_shift_deg"].max() <= 90.0
    images = sim.simulate(torch.zeros(16), torch.Generator().manual_seed(23))
    assert torch.isfinite(images).all()


def test_2d_theta_is_uniform_on_the_prior_box_and_simulates_grid_templates():
    base = torch.randn(50, 3, generator=torch.Generator().manual_seed(5)) * 10
    grid = torch.stack(torch.meshgrid(torch.tensor([-4.0, 1.0, 6.0]), torch.tensor([-1.0, 1.0]), indexing="ij"), -1)
    grid = grid.reshape(-1, 2)
    coords = torch.stack([base * (1 + 0.03 * t1) + torch.tensor([0.0, 0.0, 2.0 * t2]) for t1, t2 in grid])
    priors = make_priors(theta_range_A=[[-4.0, 6.0], [-1.0, 1.0]], mask_radius_A=30.0)
    sim = Simulator(AtomTemplates(coords, grid, torch.ones(50)), 32, 2.0, priors)
    theta_few, images = sim.sample(8, torch.Generator().manual_seed(3))
    assert theta_few.shape == (8, 2) and images.shape == (8, 32, 32)
    torch.testing.assert_close(images.mean(dim=(1, 2)), torch.zeros(8), atol=1e-5, rtol=0)
    theta = sim.sample_theta(20000, torch.Generator().manual_seed(4)).numpy()
    assert theta.shape == (20000, 2)
    assert theta[:, 0].min() >= -4.0 and theta[:, 0].max() <= 6.0 and np.abs(theta[:, 1]).max() <= 1.0
    np.testing.assert_allclose(theta.mean(axis=0), [1.0, 0.0], atol=0.05)
    assert abs(np.corrcoef(theta.T)[0, 1]) < 0.03


def test_the_suite_checks_annotated_array_shapes():
    """tests/conftest.py checks the physics modules' jaxtyping annotations at every call: an image batch with
    a mask of another size is refused naming the parameter, before any arithmetic."""
    from cryoflow.physics.simulator import masked_variance

    with pytest.raises(jaxtyping.TypeCheckError, match="mask"):
        masked_variance(torch.zeros(2, 8, 8), torch.ones(6, 6, dtype=torch.bool))
