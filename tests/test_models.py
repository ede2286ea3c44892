import numpy as np
import pytest
import torch
from simulation_helpers import make_priors

from cryoflow.errors import InputError
from cryoflow.sbi import models


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


@pytest.fixture(scope="module")
def model_2d():
    torch.manual_seed(3)
    return models.PosteriorEstimator(
        [[-4.0, 6.0], [-2.0, 2.0]], latent_dim=8, width=4, transforms=2, hidden_features=(16, 16)
    ).eval()


def test_2d_grid_density_matches_pointwise_log_prob_in_chunks(model_2d):
    images = torch.randn(3, 32, 32)
    grid = torch.stack(torch.meshgrid(torch.linspace(-4, 6, 7), torch.linspace(-2, 2, 5), indexing="ij"), -1)
    grid = grid.reshape(-1, 2)
    with torch.no_grad():
        latent = model_2d.embedding(images)
        on_grid = model_2d.log_prob_grid(latent, grid, chunk_values=100)  # a few points per chunk
        pointwise = torch.stack([model_2d.log_prob(point.expand(3, 2), images) for point in grid], dim=1)
    assert model_2d.theta_dim == 2 and on_grid.shape == (3, 35)
    torch.testing.assert_close(on_grid, pointwise, atol=1e-4, rtol=1e-4)


def test_2d_density_is_normalized_in_angstrom(model_2d):
    """With both coordinates standardized, log q still integrates to 1 over the θ plane in Å²."""
    axes = torch.linspace(-60, 70, 601), torch.linspace(-30, 30, 601)
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, 2)
    with torch.no_grad():
        density = model_2d.log_prob_grid(model_2d.embedding(torch.randn(2, 32, 32)), grid).exp()
    integral = torch.trapezoid(torch.trapezoid(density.reshape(2, 601, 601), axes[1], dim=2), axes[0], dim=1)
    torch.testing.assert_close(integral, torch.ones(2), atol=5e-3, rtol=0)


def test_2d_model_round_trips_and_old_1d_buffers_stay_scalar(model_2d, small_model, tmp_path):
    models.save_model(tmp_path / "m2.pt", model_2d, {})
    loaded, _ = models.load_model(tmp_path / "m2.pt")
    assert loaded.architecture["theta_range_A"] == [[-4.0, 6.0], [-2.0, 2.0]] and loaded.theta_dim == 2
    theta, images = torch.tensor([[0.5, 1.0], [-3.0, -1.5]]), torch.randn(2, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded.log_prob(theta, images), model_2d.log_prob(theta, images))
    assert small_model.theta_center.shape == () and small_model.architecture["theta_range_A"] == [-4.0, 6.0]
    assert models.uniform_prior_loss([[-4.0, 6.0], [-2.0, 2.0]]) == pytest.approx(np.log(40.0))


def test_a_ctf_conditioned_model_reads_the_defocus_saves_it_and_refuses_values_outside_its_prior(tmp_path):

    priors = make_priors(theta_range_A=(-4.0, 6.0), defocus_range_A=(5000.0, 20000.0), astigmatism_max_A=300.0)
    context = models.ctf_context_from_priors(priors)
    assert context == {"features": ["defocus_A", "astigmatism_A"], "low": [5000.0, -300.0], "high": [20000.0, 300.0]}
    torch.manual_seed(1)
    model = models.PosteriorEstimator(
        (-4.0, 6.0), latent_dim=8, width=4, transforms=1, hidden_features=(16,), ctf_context=context
    ).eval()
    ctf = {"defocus_u_A": np.array([5300.0, 20300.0]), "defocus_v_A": np.array([4700.0, 19700.0])}
    features = model.ctf_features(ctf)  # the prior's ends map to ∓1: (U + V)/2 and (U − V)/2
    torch.testing.assert_close(features, torch.tensor([[-1.0, 1.0], [1.0, 1.0]]))
    images, grid = torch.randn(2, 32, 32), torch.linspace(-4, 6, 11)
    with torch.no_grad():
        latent = model.embedding(images)
        near, far = (
            model.log_prob_grid(latent, grid, ctf=model.ctf_features({"defocus_u_A": np.full(2, d)}))
            for d in (6000.0, 19000.0)
        )
        with pytest.raises(ValueError, match="condition_on_ctf"):
            model.log_prob_grid(latent, grid)
    assert (near - far).abs().max() > 1e-4  # the defocus reaches the flow
    models.save_model(tmp_path / "m.pt", model, {})
    loaded, _ = models.load_model(tmp_path / "m.pt")
    assert loaded.ctf_context == context
    with torch.no_grad():
        torch.testing.assert_close(
            loaded.log_prob_grid(latent, grid, ctf=features), model.log_prob_grid(latent, grid, ctf=features)
        )
    models.check_ctf_in_prior(model, {"defocus_u_A": np.array([8000.0, 20200.0])}, "p.star")  # within 2 %
    with pytest.raises(InputError, match=r"p.star, particle 2: defocus_A 26000 lies outside the range \[5000, 20000\]"):
        models.check_ctf_in_prior(model, {"defocus_u_A": np.array([8000.0, 26000.0])}, "p.star")


def test_a_card_beside_other_weights_is_refused_naming_the_field(small_model, tmp_path):
    import json

    from cryoflow.io.fileio import sha256_files

    meta = {"name": "a", "best_val_loss": 1.25, "steps_run": 300}
    models.save_model(tmp_path / "posterior.pt", small_model, meta)
    card = tmp_path / "card.json"
    card.write_text(json.dumps({**meta, "weights_sha256": sha256_files(tmp_path / "posterior.pt")}))
    models.load_model(tmp_path / "posterior.pt")  # its own card
    card.write_text(json.dumps({**meta, "weights_sha256": "0" * 64}))
    with pytest.raises(InputError, match="field 'weights_sha256' does not match"):
        models.load_model(tmp_path / "posterior.pt")
    card.write_text(json.dumps({**meta, "best_val_loss": 1.5}))  # a card of before checksums, of another run
    with pytest.raises(InputError, match=r"card.json: field 'best_val_loss' differs from the metadata inside"):
        models.load_model(tmp_path / "posterior.pt")


def test_a_band_limited_embedding_sees_the_low_frequencies_only_and_round_trips(tmp_path):
    """train.embedding.crop_px: the embedding Fourier-crops its input, keeping a constant image's value and
    exactly the frequencies below the crop's Nyquist; a model file records it and loads it back."""
    embedding = models.ResNet18Embedding(latent_dim=8, width=4, crop_px=16)
    y, x = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    low = torch.cos(2 * torch.pi * 3 * x / 64) + 0.5 * torch.sin(2 * torch.pi * 5 * y / 64)  # inside 16 px's band
    high = torch.cos(2 * torch.pi * 20 * x / 64)  # beyond its Nyquist (8 cycles per box)
    cropped = embedding.band_limited(torch.stack([low + high, torch.full((64, 64), 2.5)]))
    assert cropped.shape == (2, 16, 16)
    # the same waves sampled on the 16 px grid, 4 px per pixel: what survives is the low band alone
    expected = torch.cos(2 * torch.pi * 3 * x[::4, ::4] / 64) + 0.5 * torch.sin(2 * torch.pi * 5 * y[::4, ::4] / 64)
    assert torch.allclose(cropped[0], expected, atol=1e-4)
    assert torch.allclose(cropped[1], torch.full((16, 16), 2.5), atol=1e-5)
    assert embedding(torch.randn(3, 64, 64)).shape == (3, 8)
    model = models.PosteriorEstimator(
        [-9.0, 9.0], latent_dim=8, width=4, transforms=1, hidden_features=(8,), crop_px=32
    )
    assert model.architecture["crop_px"] == 32
    models.save_model(tmp_path / "m.pt", model, {"name": "crop"})
    loaded, _ = models.load_model(tmp_path / "m.pt")
    assert loaded.embedding.crop_px == 32
    images = torch.randn(2, 64, 64)
    with torch.no_grad():
        assert torch.allclose(loaded.embedding(images), model.eval().embedding(images), atol=1e-5)
    # a model without it records nothing new: files written before the option load unchanged
    assert "crop_px" not in models.PosteriorEstimator([-9.0, 9.0], latent_dim=8, width=4).architecture
