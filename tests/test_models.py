import numpy as np
import pytest
import torch

from cryoflow import models
from cryoflow.fileio import InputError


def test_resnet18_has_resnet18_size():
    """torchvision's resnet18 has 11,689,512 parameters; one input channel and a 256-d head give 11,301,568."""
    embedding = models.ResNet18Embedding(latent_dim=256, width=64)
    assert models.count_parameters(embedding) == 11_689_512 - (512 * 1000 + 1000) - 64 * 2 * 49 + (512 * 256 + 256)
    out = embedding.eval()(torch.randn(3, 128, 128))
    assert out.shape == (3, 256)


@pytest.fixture(scope="module")
def small_model():
    torch.manual_seed(0)
    return models.PosteriorEstimator((-4.0, 6.0), latent_dim=8, width=4, transforms=2, hidden_features=(16, 16)).eval()


def test_grid_density_matches_pointwise_log_prob(small_model):
    images = torch.randn(3, 32, 32)
    grid = torch.linspace(-4, 6, 11)
    with torch.no_grad():
        on_grid = small_model.log_prob_grid(small_model.embedding(images), grid)
        pointwise = torch.stack([small_model.log_prob(torch.full((3,), float(t)), images) for t in grid], dim=1)
    assert on_grid.shape == (3, 11)
    torch.testing.assert_close(on_grid, pointwise, atol=1e-4, rtol=1e-4)


def test_density_is_normalized_in_angstrom(small_model):
    """log q carries the Jacobian of the standardization: it integrates to 1 over θ in Å."""
    images = torch.randn(2, 32, 32)
    grid = torch.linspace(-60, 70, 20001)
    with torch.no_grad():
        density = small_model.log_prob_grid(small_model.embedding(images), grid).exp()
    integral = torch.trapezoid(density, grid, dim=1)
    torch.testing.assert_close(integral, torch.ones(2), atol=2e-3, rtol=0)


def test_save_and_load_round_trip(small_model, tmp_path):
    path = tmp_path / "model.pt"
    models.save_model(path, small_model, {"seed": 3, "torch": torch.__version__})
    loaded, metadata = models.load_model(path)
    assert metadata["seed"] == 3
    images = torch.randn(2, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(
            loaded.log_prob(torch.tensor([0.5, 1.0]), images), small_model.log_prob(torch.tensor([0.5, 1.0]), images)
        )


class Sneaky:
    def __reduce__(self):
        return (print, ("code ran",))


def test_loading_never_executes_pickled_code(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": "cryoflow-posterior-v1", "payload": Sneaky()}, path)
    with pytest.raises(InputError, match="evil.pt"):
        models.load_model(path)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, other)
    with pytest.raises(InputError, match="'format'"):
        models.load_model(other)


def test_prior_entropy():
    assert models.uniform_prior_loss((-4.0, 6.0)) == pytest.approx(np.log(10.0))
