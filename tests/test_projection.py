import math

import numpy as np
import pytest
import torch

from cryoflow.io import structure
from cryoflow.physics import rasterize
from cryoflow.physics.ctf import fourier_frequencies
from cryoflow.physics.projection import (
    AtomTemplates,
    VolumeTemplates,
    grid_axes,
    interpolate_coords,
    interpolation_weights,
    project_gaussians_exact,
    project_gaussians_fourier,
    project_volume_fourier,
)
from cryoflow.physics.simulator import uniform_rotations


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


def band_limit(images: torch.Tensor, pixel_size_A: float, fraction: float = 0.8) -> torch.Tensor:
    """Images low-pass filtered at ``fraction`` of Nyquist (a hard radial cut)."""
    box = images.shape[-1]
    s_y, s_x = fourier_frequencies(box, pixel_size_A, dtype=images.dtype)
    keep = torch.sqrt(s_x**2 + s_y**2) <= fraction * 0.5 / pixel_size_A
    return torch.fft.irfft2(torch.fft.rfft2(images) * keep, s=(box, box))


@pytest.fixture(scope="module")
def adk_map(adk_ca):
    """4AKE CA beads (σ 2 Å) centred on their centre of mass, and their map at 1.5 Å voxels."""
    coords = adk_ca.getCoords()
    weights = structure.bead_weights(adk_ca, "CA")
    coords = coords - weights @ coords / weights.sum()
    density = rasterize.rasterize_gaussians(coords, weights, 2.0, 1.5, 64, np.zeros(3))
    return torch.as_tensor(coords), torch.as_tensor(weights), torch.as_tensor(density)


@pytest.mark.parametrize("box,pixel", [(64, 1.5), (48, 2.0)])
def test_volume_projection_matches_atom_projection_within_one_percent(adk_map, box, pixel):
    """Fourier-slice projection of the rasterized map = the exact bead projection of the same model."""
    coords, weights, density = adk_map
    rotation = uniform_rotations(6, torch.Generator().manual_seed(11), dtype=torch.float64)
    exact = project_gaussians_exact(coords @ rotation.transpose(-1, -2), weights, 2.0, box, pixel)
    spectrum = project_volume_fourier(density, rotation, 1.5, box, pixel, oversample=3)
    sliced = torch.fft.irfft2(spectrum, s=(box, box))
    error = (band_limit(sliced, pixel) - band_limit(exact, pixel)).norm() / band_limit(exact, pixel).norm()
    assert error.item() < 0.01
    # and it integrates to the model's electrons, as the bead projection does
    assert sliced.sum((1, 2)) / weights.sum() == pytest.approx(torch.ones(6, dtype=torch.float64), rel=0.02)


def test_volume_projection_error_falls_with_oversampling(adk_map):
    coords, weights, density = adk_map
    rotation = uniform_rotations(4, torch.Generator().manual_seed(12), dtype=torch.float64)
    exact = project_gaussians_exact(coords @ rotation.transpose(-1, -2), weights, 2.0, 64, 1.5)
    errors = []
    for oversample in (1, 2, 3):
        sliced = torch.fft.irfft2(project_volume_fourier(density, rotation, 1.5, 64, 1.5, oversample), s=(64, 64))
        errors.append(((sliced - exact).norm() / exact.norm()).item())
    assert errors[0] > errors[1] > errors[2]


def test_volume_and_atom_templates_give_the_same_images(adk_map):
    """The two template kinds inside the simulator: same rotation, shift and θ give the same image."""
    coords, weights, density = adk_map
    atoms = AtomTemplates(torch.stack([coords, coords]), torch.tensor([0.0, 1.0]), weights, oversample=2)
    maps = VolumeTemplates(torch.stack([density, density]), torch.tensor([0.0, 1.0]), 1.5, oversample=3)
    assert maps.total_electrons == pytest.approx(atoms.total_electrons, rel=1e-3)
    rotation = uniform_rotations(3, torch.Generator().manual_seed(13))
    shift = torch.tensor([[3.0, -2.0], [0.0, 0.0], [-4.5, 1.0]])
    theta = torch.tensor([0.2, 0.5, 0.9])
    a = torch.fft.irfft2(atoms.spectrum(theta, rotation, shift, 48, 2.0, 2.0), s=(48, 48))
    b = torch.fft.irfft2(maps.spectrum(theta, rotation, shift, 48, 2.0), s=(48, 48))
    assert ((band_limit(a, 2.0) - band_limit(b, 2.0)).norm() / band_limit(a, 2.0).norm()).item() < 0.01


def test_volume_templates_blend_neighbouring_maps():
    g = torch.Generator().manual_seed(14)
    maps = torch.rand(3, 16, 16, 16, generator=g)
    templates = VolumeTemplates(maps, torch.tensor([-1.0, 0.0, 2.0]), 2.0, oversample=2)
    rotation = uniform_rotations(1, g)
    no_shift = torch.zeros(1, 2)

    def spectrum(t):
        return templates.spectrum(torch.tensor([t]), rotation, no_shift, 16, 2.0)

    assert torch.allclose(spectrum(1.0), 0.5 * (spectrum(0.0) + spectrum(2.0)), atol=1e-3)


def test_bilinear_weights_on_a_2d_grid():
    axes = (torch.tensor([-2.0, 0.0, 2.0]), torch.tensor([-1.0, 1.0]))
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, 2)
    assert [len(a) for a in grid_axes(grid)] == [3, 2]
    index, weight = interpolation_weights(axes, grid)  # at the nodes: all weight on the node itself
    picked = torch.gather(index, 1, weight.argmax(dim=1, keepdim=True))[:, 0]
    assert picked.tolist() == list(range(6)) and torch.allclose(weight.max(dim=1).values, torch.ones(6))
    index, weight = interpolation_weights(axes, torch.tensor([[1.0, 0.0], [-1.5, 0.5]]))
    assert sorted(index[0].tolist()) == [2, 3, 4, 5] and torch.allclose(weight[0], torch.full((4,), 0.25))
    assert torch.allclose(weight.sum(dim=1), torch.ones(2))
    with pytest.raises(ValueError, match="row-major grid"):
        grid_axes(grid[[1, 0, 2, 3, 4, 5]])  # column-major or shuffled templates


def test_atom_templates_on_a_2d_grid_interpolate_linear_motion_exactly():
    """Templates that move linearly with θ₁ and θ₂: bilinear interpolation reproduces them anywhere."""
    g = torch.Generator().manual_seed(21)
    base, u, v = (torch.randn(30, 3, generator=g) for _ in range(3))
    axes = (torch.linspace(-4.0, 4.0, 5), torch.linspace(-3.0, 3.0, 4))
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, 2)
    coords = base + grid[:, 0, None, None] * u + grid[:, 1, None, None] * v
    templates = AtomTemplates(coords, grid, torch.ones(30), center_A=torch.zeros(3))
    theta = torch.tensor([[0.3, -2.2], [-3.9, 2.9], [1.7, 0.1]])
    expected = base + theta[:, 0, None, None] * u + theta[:, 1, None, None] * v
    torch.testing.assert_close(interpolate_coords(templates.coords, templates.axes, theta), expected)


def test_volume_templates_on_a_2d_grid_blend_the_four_corners():
    g = torch.Generator().manual_seed(22)
    maps = torch.rand(4, 16, 16, 16, generator=g)
    grid = torch.tensor([[0.0, 0.0], [0.0, 2.0], [1.0, 0.0], [1.0, 2.0]])
    templates = VolumeTemplates(maps, grid, 2.0, oversample=2)
    rotation, no_shift = uniform_rotations(1, g), torch.zeros(1, 2)

    def spectrum(t1, t2):
        return templates.spectrum(torch.tensor([[t1, t2]]), rotation, no_shift, 16, 2.0)

    corners = [spectrum(0.0, 0.0), spectrum(0.0, 2.0), spectrum(1.0, 0.0), spectrum(1.0, 2.0)]
    assert torch.allclose(spectrum(0.5, 1.0), sum(corners) / 4, atol=1e-3)
    assert torch.allclose(spectrum(0.25, 2.0), 0.75 * corners[1] + 0.25 * corners[3], atol=1e-3)
