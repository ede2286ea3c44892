"""Junk-aware training: images without a centred particle, and a model output that tells them apart."""

import numpy as np
import pytest
import torch
from conftest import train_settings
from simulation_helpers import make_priors

from cryoflow.physics import junk
from cryoflow.physics.projection import AtomTemplates
from cryoflow.physics.simulator import Simulator
from cryoflow.sbi import inference, models, training


def shell_simulator(snr=(1.0, 4.0)):
    """A shell of beads whose radius is 12 Å + 2θ (the easy problem of test_training), 32 px at 3 Å."""
    torch.manual_seed(0)
    unit = torch.nn.functional.normalize(torch.randn(80, 3), dim=1)
    theta_A = torch.linspace(-4, 4, 5)
    templates = torch.stack([unit * (12.0 + 2.0 * t) for t in theta_A])
    priors = make_priors(
        theta_range_A=(-4.0, 4.0),
        snr_range=snr,
        defocus_range_A=(8000, 12000),
        bead_sigma_range_A=(3.0, 3.0),
        shift_max_A=2.0,
        mask_radius_A=30.0,
    )
    return Simulator(AtomTemplates(templates, theta_A, torch.ones(80), oversample=1), 32, 3.0, priors)


def test_junk_images_are_normalized_and_of_every_kind():
    sim = shell_simulator()
    images, kind = junk.junk_images(sim, 400, torch.Generator().manual_seed(0))
    assert images.shape == (400, 32, 32) and torch.isfinite(images).all()
    np.testing.assert_allclose(images.mean(dim=(-2, -1)).numpy(), 0.0, atol=1e-4)
    np.testing.assert_allclose(images.std(dim=(-2, -1)).numpy(), 1.0, atol=1e-3)
    assert set(kind.tolist()) == set(range(len(junk.KINDS)))


def test_off_centre_particles_enter_from_outside_the_centre():
    """The signal of an off-centre particle sits away from the image centre; a centred one's at it."""
    sim = shell_simulator()
    generator = torch.Generator().manual_seed(1)
    nuisance = sim.sample_nuisance(64, generator)
    nuisance["b_factor_A2"] = torch.zeros(64)
    away, reference_var = junk.off_centre_particles(sim, 64, nuisance, generator)
    centred = sim.noiseless(sim.sample_theta(64, generator), {**nuisance, "shift_A": torch.zeros(64, 2)})
    yy, xx = torch.meshgrid(torch.arange(32) - 16, torch.arange(32) - 16, indexing="ij")
    central = (yy**2 + xx**2) <= 5**2  # 15 Å: inside the 24 Å shell's projection

    def central_share(images):
        power = images**2
        return (power[:, central].sum(1) / power.sum(dim=(-2, -1))).mean().item()

    assert central_share(away) < 0.5 * central_share(centred)
    assert junk.off_centre_min_A(sim) == pytest.approx(4 * 3.0)  # four pixels: beyond 2.5 × the 2 Å shift prior
    # the noise reference: the variance a centred particle shows inside the mask, within a factor of two
    centred_var = ((centred - centred.mean(dim=(-2, -1), keepdim=True)) ** 2)[:, sim.mask].mean(1)
    ratio = (reference_var.median() / centred_var.median()).item()
    assert 0.5 < ratio < 2.0


def test_junk_batch_size():
    assert junk.junk_batch_size(128, 0.0) == 0
    assert junk.junk_batch_size(128, 0.25) == 32
    assert junk.junk_batch_size(4, 0.01) == 1 and junk.junk_batch_size(4, 0.9) == 3


@pytest.fixture(scope="module")
def junk_aware():
    sim = shell_simulator()
    model = models.PosteriorEstimator(
        (-4.0, 4.0), latent_dim=16, width=8, transforms=2, hidden_features=(32, 32), particle_head=True
    )
    config = train_settings(
        steps=300, batch_size=64, learning_rate=3e-3, validation_size=256, validate_every=100, junk_fraction=0.5
    )
    model, history, _ = training.train(model, sim, config)
    return model, history, sim


@pytest.mark.slow
def test_the_particle_output_separates_particles_from_junk(junk_aware):
    model, history, sim = junk_aware
    assert all(np.isfinite(row["particle_bce"]) for row in history)
    assert history[-1]["particle_bce"] < 0.5 * np.log(2)  # well below guessing
    generator = torch.Generator().manual_seed(5)
    theta, particles = sim.sample(300, generator)
    rubbish, kind = junk.junk_images(sim, 300, generator)
    post = inference.posterior_batches(model, [particles.numpy(), rubbish.numpy()], 600, grid_points=64, n_samples=10)
    p_particle = post["p_particle"]
    assert p_particle.shape == (600,) and ((0 <= p_particle) & (p_particle <= 1)).all()
    # area under the ROC curve: a random particle outranks a random junk image
    auc = (p_particle[:300, None] > p_particle[None, 300:]).mean()
    assert auc > 0.9, auc
    # the posterior of the particles still follows θ: the flow learned from particles only
    assert np.corrcoef(post["mean"][:300], theta.numpy())[0, 1] > 0.8
    columns = inference.star_columns({k: v[:300] for k, v in post.items()}, 1)
    np.testing.assert_array_equal(columns[inference.PARTICLE_COLUMN], p_particle[:300])


@pytest.mark.slow
def test_a_junk_aware_model_saves_and_loads_its_particle_output(tmp_path, junk_aware):
    model = junk_aware[0]
    models.save_model(tmp_path / "m.pt", model, {})
    loaded, _ = models.load_model(tmp_path / "m.pt")
    assert loaded.architecture["particle_head"] is True
    latent = torch.randn(3, 16)
    torch.testing.assert_close(loaded.particle_logit(latent), model.particle_logit(latent))
    plain = models.PosteriorEstimator((-4.0, 4.0), latent_dim=16, width=8, transforms=1, hidden_features=(8,))
    assert "particle_head" not in plain.architecture and plain.particle is None
    with pytest.raises(ValueError, match="junk_fraction"):
        plain.particle_logit(latent)


@pytest.mark.slow
def test_a_junk_aware_model_finds_the_particles_of_a_micrograph(junk_aware):
    """Shell particles pasted at known places in a 768 Å micrograph with white noise: the windows' p_particle
    peaks pick them (precision and recall ≥ 0.8), and windows on particles give posterior means that follow θ."""
    from cryoflow.analysis import candidates, picking, predictive
    from cryoflow.demo import micrograph_set

    model, _, sim = junk_aware
    rng = np.random.default_rng(3)
    generator = torch.Generator().manual_seed(3)
    spots = micrograph_set.place(12, 768.0, 60.0, 150.0, (0, 0, 0, 0), rng)
    theta = torch.as_tensor(rng.uniform(-4, 4, len(spots)), dtype=torch.float32)
    nuisance = sim.sample_nuisance(len(spots), generator)
    nuisance["shift_A"] = torch.zeros(len(spots), 2)
    signal = sim.noiseless(theta, nuisance)
    variance = float(torch.median(torch.var(signal[:, sim.mask], dim=1))) / 2.0  # SNR ≈ 2
    canvas = np.zeros((256, 256))
    truth = []
    for (x_A, y_A), image in zip(spots, signal.numpy()):
        x, y = int(round(x_A / 3.0)), int(round(y_A / 3.0))
        micrograph_set.paste(canvas, image, x, y)
        truth.append((x, y))
    micrograph = (canvas + rng.normal(scale=np.sqrt(variance), size=canvas.shape)).astype(np.float32)
    reference = predictive.LatentReference(
        inference.posterior_batches(model, [sim.sample(300, generator)[1].numpy()], 300, grid_points=32, n_samples=1)[
            "latent"
        ]
    )
    options = {"batch_size": 256, "grid_points": 64, "grid_points_2d": 8, "score": "p_particle", "typical_p": 0.0}
    result = picking.evaluate_micrograph(model, micrograph, 3.0, 3.0, 32, 3, reference, options)
    assert result["maps"]["theta_mean"].shape == (75, 75) and result["map_pixel_A"] == 9.0
    cells = candidates.local_maxima(result["maps"]["score"], 30.0 / 9.0, 0.5)
    picked = np.array([candidates.map_to_micrograph_px(r, c, result, 3.0) for r, c in cells]).reshape(-1, 2)
    tp, fp, fn = candidates.match(picked, np.array(truth, float), 12.0 / 3.0)
    assert tp / (tp + fp) >= 0.8 and tp / (tp + fn) >= 0.8, (tp, fp, fn)
    rows, cols = candidates.nearest_map_pixel(*np.array(truth).T, result, 3.0, result["maps"]["theta_mean"].shape)
    assert np.corrcoef(result["maps"]["theta_mean"][rows, cols], theta.numpy())[0, 1] > 0.7


def test_particle_output_accuracy_is_the_area_under_the_roc_curve():
    from cryoflow.analysis import diagnostics

    kinds = np.array(["empty", "ice", "empty", "off_centre"])
    perfect = diagnostics.particle_output_accuracy(np.array([0.9, 0.8, 0.7]), np.array([0.1, 0.2, 0.3, 0.6]), kinds)
    assert perfect["auc"] == 1.0 and perfect["particles_above_half"] == 1.0
    assert perfect["empty_below_half"] == 1.0 and perfect["off_centre_below_half"] == 0.0
    # one junk image outranks one of three particles: 11 of the 12 pairs ordered right
    mixed = diagnostics.particle_output_accuracy(np.array([0.9, 0.8, 0.5]), np.array([0.1, 0.2, 0.3, 0.6]), kinds)
    assert mixed["auc"] == round(11 / 12, 4)


def test_the_validation_protocol_draws_the_held_out_sets_the_likelihood_reference_reads():
    """The validate rule's arrays: seeded (a rerun gives the same), the fixed-SNR sets are heldout's k-th sets
    at their SNR, junk scored only by a junk-aware model, one view angle per image within [0°, 90°]."""
    from cryoflow.sbi import heldout, validation

    sim = shell_simulator()
    settings = {"n_simulations": 12, "batch_size": 5, "grid_points": 32, "grid_points_2d": 16, "n_samples": 4}
    settings |= {"fixed_snr": [0.1, 1.0], "n_fixed_snr": 3}
    coords = torch.stack([torch.randn(80, 3) * (1 + 0.1 * t) for t in range(5)]).numpy()
    ensemble = {"coords_A": coords, "theta_A": np.linspace(-4, 4, 5)}
    torch.manual_seed(1)
    plain = models.PosteriorEstimator((-4.0, 4.0), latent_dim=8, width=4, transforms=1, hidden_features=(8,)).eval()
    junk_aware = models.PosteriorEstimator(
        (-4.0, 4.0), latent_dim=8, width=4, transforms=1, hidden_features=(8,), particle_head=True
    ).eval()
    one = validation.validation_arrays(plain, sim, ensemble, settings, 3, "cpu")
    again = validation.validation_arrays(plain, sim, ensemble, settings, 3, "cpu")
    assert one.keys() == again.keys() and all(np.array_equal(one[k], again[k]) for k in one)
    assert one["samples"].shape == (12, 4) and one["images"].shape == (12, 32, 32)
    np.testing.assert_array_equal(one["fixed_snr_snr"], [0.1] * 3 + [1.0] * 3)
    theta_1, _, _ = heldout.fixed_snr_set(sim, 1.0, 1, 3, 3)
    np.testing.assert_array_equal(one["fixed_snr_theta_true"][3:], theta_1.numpy())
    theta, _, _ = heldout.calibration_set(sim, 12, 3)
    np.testing.assert_array_equal(one["theta_true"], theta.numpy())
    assert ((0 <= one["view_angle_deg"]) & (one["view_angle_deg"] <= 90)).all()
    assert "junk_p_particle" not in one
    scored = validation.validation_arrays(junk_aware, sim, ensemble, settings, 3, "cpu")
    assert scored["junk_p_particle"].shape == (12,) and set(scored["junk_kind"]) <= set(junk.KINDS)
