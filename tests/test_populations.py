"""The population p(θ) deconvolved from per-particle posteriors, and the per-state particle subsets."""

import numpy as np
import pytest

from cryoflow.analysis import populations


def calibrated_posteriors(n=1000, seed=0, low=-9.0, high=9.0):
    """The demo's 70/30 mixture at −5 and 4.5 Å (sd 0.5), seen through posteriors 0.8 to 3 Å wide: each
    particle's posterior is the uniform prior times a Gaussian likelihood around a noisy reading."""
    rng = np.random.default_rng(seed)
    first = rng.random(n) < 0.7
    truth = np.where(first, rng.normal(-5.0, 0.5, n), rng.normal(4.5, 0.5, n))
    sigma = rng.uniform(0.8, 3.0, n)
    reading = truth + rng.normal(size=n) * sigma
    samples = np.empty((n, 200))
    for i in range(n):
        draws = reading[i] + rng.normal(size=4000) * sigma[i]
        samples[i] = draws[(draws > low) & (draws < high)][:200]
    return samples, truth, first


def test_the_demo_mixture_is_recovered_where_the_mean_histogram_smears_it():
    samples, truth, first = calibrated_posteriors()
    estimate = populations.estimate(samples, [-9.0, 9.0], n_bins=36, n_bootstrap=30, seed=1)
    states = populations.modes(estimate["weights"], estimate["edges_A"])
    assert len(states) == 2
    assert states[0]["weight"] == pytest.approx(0.7, abs=0.05) and states[1]["weight"] == pytest.approx(0.3, abs=0.05)
    assert states[0]["theta_mean_A"] == pytest.approx(-5.0, abs=1.0)
    assert states[1]["theta_mean_A"] == pytest.approx(4.5, abs=1.0)
    # the deconvolved density is sharper than the posterior means' histogram: its peak is higher
    means_hist, _ = np.histogram(samples.mean(axis=1), bins=estimate["edges_A"], density=True)
    assert estimate["density"].max() > 1.2 * means_hist.max()
    assert np.all(estimate["low"] <= estimate["density"] + 1e-12) and np.all(
        estimate["density"] <= estimate["high"] + 1e-12
    )
    assert estimate["free_energy_kT"].min() == 0.0
    width = estimate["edges_A"][1] - estimate["edges_A"][0]
    assert estimate["density"].sum() * width == pytest.approx(1.0)


def test_a_single_population_gives_one_state_and_states_keep_confident_particles():
    samples, truth, _ = calibrated_posteriors(n=400, seed=3)
    one = samples[truth < 0]
    estimate = populations.estimate(one, [-9.0, 9.0], n_bootstrap=10)
    assert len(populations.modes(estimate["weights"], estimate["edges_A"])) == 1
    inside = populations.mass_inside(samples, -9.0, 0.0)
    assert inside.shape == (400,) and np.all((inside >= 0) & (inside <= 1))
    confident = inside >= 0.9
    assert np.mean(truth[confident] < 0) > 0.97  # those kept for state 1 are nearly all from it


def test_bin_likelihoods_count_samples_with_a_floor():
    samples = np.array([[0.1, 0.2, 0.3, 2.5]])
    like = populations.bin_likelihoods(samples, np.array([0.0, 1.0, 2.0, 3.0]), floor=0.0)
    np.testing.assert_allclose(like, [[0.75, 0.0, 0.25]])
    assert populations.bin_likelihoods(samples, np.array([0.0, 1.0, 2.0, 3.0]))[0, 1] > 0
