import numpy as np
import pytest
import torch
from conftest import train_settings
from simulation_helpers import make_priors

from cryoflow.analysis import diagnostics
from cryoflow.physics.projection import AtomTemplates
from cryoflow.physics.simulator import Simulator
from cryoflow.sbi import devices, inference, models, training


@pytest.fixture(scope="module")
def trained():
    """A small estimator trained on an easy problem: a shell of beads whose radius is 12 Å + 2θ.

    The radius shows in every projection, so every image is informative.
    """
    torch.manual_seed(0)
    n = 80
    unit = torch.nn.functional.normalize(torch.randn(n, 3), dim=1)
    theta_A = torch.linspace(-4, 4, 5)
    templates = torch.stack([unit * (12.0 + 2.0 * t) for t in theta_A])
    priors = make_priors(
        theta_range_A=(-4.0, 4.0), snr_range=(1.0, 4.0), defocus_range_A=(8000, 12000), bead_sigma_range_A=(3.0, 3.0)
    )
    sim = Simulator(AtomTemplates(templates, theta_A, torch.ones(n), oversample=1), 32, 3.0, priors)
    model = models.PosteriorEstimator((-4.0, 4.0), latent_dim=16, width=8, transforms=2, hidden_features=(32, 32))
    config = train_settings(steps=300, batch_size=64, learning_rate=3e-3, validation_size=256, validate_every=100)
    model, history, _ = training.train(model, sim, config)
    return model, history, sim


@pytest.mark.slow
def test_training_learns_beyond_the_prior(trained):
    model, history, _ = trained
    prior_loss = models.uniform_prior_loss((-4.0, 4.0))
    assert [row["step"] for row in history] == [100, 200, 300]
    assert min(row["val_loss"] for row in history) < prior_loss - 0.5
    assert all(np.isfinite(row["train_loss"]) for row in history)
    assert not model.training


@pytest.mark.slow
def test_posteriors_cover_the_truth_on_held_out_simulations(trained):
    model, _, sim = trained
    theta, images = sim.sample(400, torch.Generator().manual_seed(123))
    post = inference.posterior_batches(
        model, inference.batched(images.numpy(), 100), 400, grid_points=200, n_samples=200
    )
    acc = diagnostics.accuracy(post["mean"], post["q05"], post["q95"], theta.numpy())
    assert acc["pearson_r"] > 0.8
    assert 0.8 <= acc["coverage_90"] <= 0.98
    assert np.all(post["std"] > 0) and post["latent"].shape == (400, 16)


def test_select_device_falls_back_to_cpu():
    assert devices.select_device("auto", env={}).type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="inference.device is 'cuda' but no CUDA device"):
            devices.select_device("cuda", "inference.device", env={})


@pytest.mark.skipif(torch.cuda.is_available(), reason="a usable GPU is the other case")
@pytest.mark.parametrize("env", [{"CUDA_VISIBLE_DEVICES": "0"}, {"SLURM_JOB_GPUS": "2,3"}, {"SLURM_GPUS_ON_NODE": "4"}])
def test_auto_on_a_job_given_gpus_that_torch_cannot_use_stops_naming_the_versions(env):
    """A wheel whose CUDA the node's driver does not support (or a CPU-only wheel) on a GPU allocation: an
    error that says so, not a day of CPU training holding the GPUs."""
    with pytest.raises(RuntimeError) as stopped:
        devices.select_device("auto", "train.device", env=env)
    message = str(stopped.value)
    assert "train.device is 'auto' and this job was given GPUs" in message and next(iter(env)) in message
    assert f"torch {torch.__version__}" in message and ("driver" in message.lower())


@pytest.mark.parametrize(
    "env", [{}, {"CUDA_VISIBLE_DEVICES": ""}, {"CUDA_VISIBLE_DEVICES": "-1"}, {"SLURM_GPUS_ON_NODE": "0"}]
)
def test_a_job_given_no_gpus_takes_the_cpu_under_auto(env):
    if not torch.cuda.is_available():
        assert devices.select_device("auto", env=env).type == "cpu"


def test_wall_time_budget_stops_early_with_a_scored_model():
    torch.manual_seed(1)
    unit = torch.nn.functional.normalize(torch.randn(30, 3), dim=1)
    theta_A = torch.linspace(-4, 4, 3)
    templates = AtomTemplates(torch.stack([unit * (12.0 + 2.0 * t) for t in theta_A]), theta_A, torch.ones(30), 1)
    sim = Simulator(templates, 32, 3.0, make_priors(theta_range_A=(-4.0, 4.0)))
    model = models.PosteriorEstimator((-4.0, 4.0), latent_dim=8, width=4, transforms=1, hidden_features=(16,))
    config = train_settings(steps=10_000, batch_size=8, validation_size=16, validate_every=1000, max_hours=1e-7)
    model, history, last_state = training.train(model, sim, config)
    assert [row["step"] for row in history] == [1]
    assert set(last_state) == set(model.state_dict())


@pytest.mark.slow
def test_2d_theta_is_learned_per_coordinate_and_posteriors_cover_the_truth():
    """Two shells of beads, the outer radius set by θ₁, the inner by θ₂: both show in every view."""
    torch.manual_seed(1)
    outer = torch.nn.functional.normalize(torch.randn(60, 3), dim=1)
    inner = torch.nn.functional.normalize(torch.randn(40, 3), dim=1)
    axes = torch.linspace(-3.0, 3.0, 3), torch.linspace(-3.0, 3.0, 3)
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, 2)
    templates = torch.stack([torch.cat([outer * (17.0 + 2.0 * t1), inner * (7.0 + 1.5 * t2)]) for t1, t2 in grid])
    priors = make_priors(
        theta_range_A=[[-3.0, 3.0], [-3.0, 3.0]],
        snr_range=(2.0, 6.0),
        defocus_range_A=(8000, 12000),
        bead_sigma_range_A=(2.5, 2.5),
    )
    sim = Simulator(AtomTemplates(templates, grid, torch.ones(100), oversample=1), 32, 2.5, priors)
    model = models.PosteriorEstimator(
        priors.theta_range_A, latent_dim=16, width=8, transforms=2, hidden_features=(32, 32)
    )
    config = train_settings(steps=400, batch_size=64, learning_rate=3e-3, validation_size=256, validate_every=100)
    model, history, _ = training.train(model, sim, config)
    assert min(row["val_loss"] for row in history) < models.uniform_prior_loss(priors.theta_range_A) - 1.0
    theta, images = sim.sample(300, torch.Generator().manual_seed(321))
    post = inference.posterior_batches(
        model, inference.batched(images.numpy(), 100), 300, n_samples=200, grid_points_2d=40
    )
    assert post["mean"].shape == (300, 2) and post["samples"].shape == (300, 200, 2)
    for d in range(2):
        acc = diagnostics.accuracy(post["mean"][:, d], post["q05"][:, d], post["q95"][:, d], theta[:, d].numpy())
        assert acc["pearson_r"] > 0.9, (d, acc)
        assert 0.75 <= acc["coverage_90"] <= 0.99, (d, acc)


@pytest.mark.slow
def test_a_ctf_conditioned_estimator_trains_and_covers_the_truth_given_each_images_defocus():
    """train.condition_on_ctf: the shell problem with a wide defocus prior; the flow gets each image's defocus,
    and its posteriors, given the defocus at inference, cover the truth."""
    torch.manual_seed(0)
    n = 80
    unit = torch.nn.functional.normalize(torch.randn(n, 3), dim=1)
    theta_A = torch.linspace(-4, 4, 5)
    templates = torch.stack([unit * (12.0 + 2.0 * t) for t in theta_A])
    priors = make_priors(
        theta_range_A=(-4.0, 4.0), snr_range=(1.0, 4.0), defocus_range_A=(5000, 25000), bead_sigma_range_A=(3.0, 3.0)
    )
    sim = Simulator(AtomTemplates(templates, theta_A, torch.ones(n), oversample=1), 32, 3.0, priors)
    model = models.PosteriorEstimator(
        (-4.0, 4.0),
        latent_dim=16,
        width=8,
        transforms=2,
        hidden_features=(32, 32),
        ctf_context=models.ctf_context_from_priors(priors),
    )
    config = train_settings(steps=200, batch_size=64, learning_rate=3e-3, validation_size=256, validate_every=100)
    model, history, _ = training.train(model, sim, config)
    assert min(row["val_loss"] for row in history) < models.uniform_prior_loss((-4.0, 4.0)) - 0.5
    generator = torch.Generator().manual_seed(123)
    theta = sim.sample_theta(300, generator)
    nuisance = sim.sample_nuisance(300, generator)
    images = sim.simulate(theta, generator, nuisance).numpy()
    post = inference.posterior_batches(
        model, inference.batched(images, 100), 300, grid_points=200, n_samples=100, ctf=nuisance
    )
    acc = diagnostics.accuracy(post["mean"], post["q05"], post["q95"], theta.numpy())
    assert acc["pearson_r"] > 0.7 and 0.8 <= acc["coverage_90"] <= 0.98
    with pytest.raises(ValueError, match="condition_on_ctf"):
        inference.posterior_batches(model, [images[:4]], 4, grid_points=32, n_samples=1)


def test_the_progress_eta_never_exceeds_the_wall_time_budget(caplog):
    import logging
    import re
    import time

    from cryoflow.logs import Progress

    caplog.set_level(logging.INFO)
    for budget_s, most in ((20.0, 20), (None, 5e3)):
        caplog.clear()
        progress = Progress(1_000_000, "train", unit="steps", every_s=0.0, budget_s=budget_s)
        time.sleep(0.01)
        progress.update(1)
        eta = float(re.search(r"eta (\d+)s", caplog.text).group(1))
        assert (eta <= most) if budget_s else (eta > most)  # 1 step in ≥ 10 ms: 10⁶ steps take ≥ 10⁴ s


def test_bf16_autocast_only_where_the_card_has_native_bf16(monkeypatch):
    """V100 and T4 emulate bfloat16 slowly: train.mixed_precision trains in float32 there."""
    cuda = torch.device("cuda", 0)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla V100-SXM2-32GB")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    assert not training.bf16_autocast(True, cuda)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    assert training.bf16_autocast(True, cuda)
    assert not training.bf16_autocast(False, cuda) and not training.bf16_autocast(True, torch.device("cpu"))
