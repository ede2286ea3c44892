import numpy as np
import pytest

from cryoflow.analysis import diagnostics


def test_median_heuristic_matches_brute_force():
    x = np.random.default_rng(0).normal(size=(60, 4))
    brute = np.median([np.sum((a - b) ** 2) for i, a in enumerate(x) for b in x[i + 1 :]])
    assert diagnostics.median_heuristic(x) == pytest.approx(brute, rel=1e-9)


def test_permuted_mmd_by_matrix_products_equals_the_pairwise_sums():
    """Each label column's MMD² from one matrix product equals the unbiased estimator written out pair by pair."""
    rng = np.random.default_rng(7)
    pooled = rng.normal(size=(23, 3))
    k = np.exp(-diagnostics.squared_distances(pooled, pooled) / 2.0)
    labels = np.zeros((23, 5))
    for column in range(5):
        labels[rng.permutation(23)[:9], column] = 1.0
    k_offdiag = k.copy()
    np.fill_diagonal(k_offdiag, 0.0)
    fast = diagnostics._mmd2_of_labels(k_offdiag, labels, 9)
    for column in range(5):
        x, y = np.flatnonzero(labels[:, column]), np.flatnonzero(labels[:, column] == 0)
        xx = sum(k[i, j] for i in x for j in x if i != j) / (9 * 8)
        yy = sum(k[i, j] for i in y for j in y if i != j) / (14 * 13)
        xy = sum(k[i, j] for i in x for j in y) / (9 * 14)
        assert fast[column] == pytest.approx(xx + yy - 2 * xy, rel=1e-10, abs=1e-12)


def test_mmd_does_not_reject_same_distribution():
    rng = np.random.default_rng(1)
    result = diagnostics.mmd_test(rng.normal(size=(300, 8)), rng.normal(size=(300, 8)), 200, seed=2)
    assert result["pvalue"] > 0.05
    assert abs(result["mmd2"]) < 0.01


def test_mmd_detects_shift():
    rng = np.random.default_rng(3)
    result = diagnostics.mmd_test(rng.normal(size=(300, 8)), rng.normal(size=(300, 8)) + 0.4, 200, seed=4)
    assert result["pvalue"] < 0.01 and result["mmd2"] > 0.01


def test_unbiased_mmd_is_centred_under_the_null():
    rng = np.random.default_rng(5)
    values = [
        diagnostics.mmd_test(rng.normal(size=(50, 3)), rng.normal(size=(50, 3)), 10, seed=i)["mmd2"] for i in range(60)
    ]
    assert abs(np.mean(values)) < 3 * np.std(values) / np.sqrt(len(values))


def test_coverage_of_exact_posteriors_is_nominal():
    rng = np.random.default_rng(6)
    mu = rng.normal(size=4000)
    truth = mu + rng.normal(size=4000)
    samples = mu[:, None] + rng.normal(size=(4000, 400))
    levels = np.array([0.5, 0.9])
    np.testing.assert_allclose(diagnostics.interval_coverage(samples, truth, levels), levels, atol=0.025)


def test_accuracy_metrics():
    truth = np.linspace(-5, 5, 101)
    out = diagnostics.accuracy(truth + 0.5, truth - 1, truth + 1, truth)
    assert out["pearson_r"] == pytest.approx(1.0)
    assert out["median_abs_error_A"] == pytest.approx(0.5)
    assert out["coverage_90"] == 1.0


def test_summary_of_a_calibrated_posterior_on_matching_latents():
    rng = np.random.default_rng(7)

    def fake_posterior(truth):
        mean = truth + rng.normal(size=len(truth)) * 0.5
        samples = mean[:, None] + rng.normal(size=(len(truth), 300)) * 0.5
        q05, q95 = np.quantile(samples, [0.05, 0.95], axis=1)
        return {"mean": mean, "samples": samples, "q05": q05, "q95": q95, "latent": rng.normal(size=(len(truth), 4))}

    truth_sim, truth_exp = rng.uniform(-5, 5, 800), rng.uniform(-5, 5, 300)
    sim = fake_posterior(truth_sim) | {"theta_true": truth_sim}
    validation, coverage = diagnostics.validation_summary(sim, seed=1)
    summary = diagnostics.summarize(fake_posterior(truth_exp), sim, validation, truth_exp, 100, 300, seed=1)
    assert summary["n_particles"] == 300
    assert summary["mmd_pvalue"] > 0.01
    assert summary["validation"]["coverage_error_max"] < 0.06
    assert summary["pearson_r"] > 0.95 and 0.85 < summary["coverage_90"] < 0.95
    assert len(coverage) == len(diagnostics.CREDIBILITY_LEVELS)


def test_ks_uniform_test_matches_scipy_and_detects_miscalibration():
    from scipy import stats

    rng = np.random.default_rng(7)
    for values in (rng.uniform(size=500), rng.beta(1.3, 1.0, size=500), rng.uniform(size=40)):
        d, p = diagnostics.ks_uniform_test(values)
        reference = stats.kstest(values, "uniform")
        assert d == pytest.approx(reference.statistic, rel=1e-12)
        assert p == pytest.approx(reference.pvalue, abs=0.02)


def test_sbc_pit_is_uniform_for_a_calibrated_posterior_and_not_for_an_overconfident_one():
    """Gaussian model: θ ~ N(0, 1), x = θ + N(0, 1); the exact posterior is N(x/2, 1/2)."""
    rng = np.random.default_rng(8)
    theta = rng.normal(size=2000)
    x = theta + rng.normal(size=2000)
    exact = rng.normal(x[:, None] / 2, np.sqrt(0.5), size=(2000, 200))
    overconfident = rng.normal(x[:, None] / 2, 0.3, size=(2000, 200))
    assert diagnostics.ks_uniform_test(diagnostics.sbc_pit(exact, theta))[1] > 0.01
    assert diagnostics.ks_uniform_test(diagnostics.sbc_pit(overconfident, theta))[1] < 1e-6


def test_view_angle_against_the_motion_axis():
    base = np.random.default_rng(9).normal(size=(50, 3)) * 10
    templates = np.stack([base, base * np.array([1.0, 1.3, 1.0])])  # motion along y
    axis = diagnostics.motion_axis(templates)
    assert abs(axis @ np.array([0.0, 1.0, 0.0])) == pytest.approx(1.0, abs=1e-9)
    beams = np.array([[0.0, 1.0, 0.0], [0.0, -2.0, 0.0], [1.0, 0.0, 0.0], [1.0, 1.0, 0.0]])
    np.testing.assert_allclose(diagnostics.view_angle_deg(beams, axis), [0.0, 0.0, 90.0, 45.0], atol=1e-6)


def test_whitening_verdict_says_what_to_do():
    from cryoflow.analysis.diagnostics import whitening_verdict

    ok = whitening_verdict({"mmd2": 0.001, "pvalue": 0.4}, {"mmd2": 0.2, "pvalue": 0.001})
    assert ok.startswith("Whitened particles are indistinguishable from simulations")
    helps = whitening_verdict({"mmd2": 0.05, "pvalue": 0.002}, {"mmd2": 0.3, "pvalue": 0.002})
    assert "whitening lowers the mismatch (MMD² 0.05 whitened vs 0.3 raw)" in helps and "ppc_verdict" in helps
    no_help = whitening_verdict({"mmd2": 0.3, "pvalue": 0.002}, {"mmd2": 0.2, "pvalue": 0.002})
    assert "whitening does not lower" in no_help and "not spread like the prior" in no_help
    same = whitening_verdict({"mmd2": 0.0277, "pvalue": 0.002}, {"mmd2": 0.0278, "pvalue": 0.002})
    assert "whitening does not lower" in same  # a 0.4 % change is not an improvement


def test_whitening_fixes_latent_mismatch_from_coloured_noise():
    """MMD sees the shift a noise colour causes in a feature, and whitening the images removes it."""
    from cryoflow.analysis.diagnostics import mmd_test
    from cryoflow.physics.whitening import estimate_noise_power, radial_power, whiten

    rng = np.random.default_rng(4)
    box = 32
    white = rng.normal(size=(400, box, box))
    spectrum = np.fft.rfft2(rng.normal(size=(400, box, box)))
    f = np.sqrt(np.fft.fftfreq(box)[:, None] ** 2 + np.fft.rfftfreq(box)[None] ** 2)
    coloured = np.fft.irfft2(spectrum / (1 + 20 * f), s=(box, box))

    def features(images):  # a crude "latent": the normalized radial power profile
        power = np.stack([radial_power(im[None])[1:12] for im in images])
        return power / power.sum(axis=1, keepdims=True)

    whitened = whiten(coloured, estimate_noise_power(coloured, mask_radius_px=6))
    raw = mmd_test(features(white[:200]), features(coloured[:200]), 100, 0)
    fixed = mmd_test(features(white[200:]), features(whitened[:200]), 100, 0)
    assert raw["pvalue"] < 0.02 and fixed["pvalue"] > 0.05 and fixed["mmd2"] < 0.1 * raw["mmd2"]


def test_distinct_points_cover_every_cluster():
    from cryoflow.report.figures import distinct_points

    rng = np.random.default_rng(0)
    centres = np.array([[0, 0], [10, 0], [0, 10], [10, 10]])
    points = np.concatenate([c + rng.normal(scale=0.5, size=(50, 2)) for c in centres])
    chosen = distinct_points(points, 4)
    assert sorted(chosen // 50) == [0, 1, 2, 3]


def test_summary_of_a_2d_posterior_reports_each_coordinate():
    """θ₁ calibrated, θ₂ overconfident: the per-coordinate numbers and the top-level worst case say so."""
    rng = np.random.default_rng(8)

    def fake_posterior(truth, width):
        mean = truth + rng.normal(size=truth.shape) * 0.5
        samples = mean[:, None, :] + rng.normal(size=(len(truth), 300, 2)) * width
        q05, q95 = np.quantile(samples, [0.05, 0.95], axis=1)
        return {"mean": mean, "samples": samples, "q05": q05, "q95": q95, "latent": rng.normal(size=(len(truth), 4))}

    truth_sim, truth_exp = rng.uniform(-5, 5, (800, 2)), rng.uniform(-5, 5, (300, 2))
    width = np.array([0.5, 0.15])
    sim = fake_posterior(truth_sim, width) | {"theta_true": truth_sim}
    validation, coverage = diagnostics.validation_summary(sim, seed=1)
    summary = diagnostics.summarize(fake_posterior(truth_exp, width), sim, validation, truth_exp, 50, 300, seed=1)
    validation = summary["validation"]
    assert coverage.shape == (2, len(diagnostics.CREDIBILITY_LEVELS))
    assert validation["coverage_error_max_theta1"] < 0.06 and validation["coverage_error_max_theta2"] > 0.3
    assert validation["sbc_ks_pvalue_theta1"] > 0.01 and validation["sbc_ks_pvalue_theta2"] < 1e-6
    assert summary["coverage_error_max"] == validation["coverage_error_max_theta2"]
    assert summary["sbc_ks_pvalue"] == validation["sbc_ks_pvalue_theta2"]
    assert summary["pearson_r_theta1"] > 0.95 and summary["coverage_90_theta2"] < 0.6
    assert "pearson_r" not in summary


def test_each_coordinate_of_a_2d_grid_has_its_own_motion_axis():
    """Mode 1 stretches the beads along x, mode 2 along z: the axes come out as x and z, not their diagonal."""
    rng = np.random.default_rng(3)
    base = rng.normal(size=(40, 3)) * 10
    grid = np.stack(np.meshgrid([-2.0, 0.0, 2.0], [-3.0, 0.0, 3.0], indexing="ij"), axis=-1).reshape(-1, 2)
    stretch_x, stretch_z = base * [1.0, 0.0, 0.0], base * [0.0, 0.0, 1.0]
    coords = np.stack([base + 0.05 * t1 * stretch_x + 0.05 * t2 * stretch_z for t1, t2 in grid])
    axes = diagnostics.motion_axes(coords, grid)
    np.testing.assert_allclose(np.abs(axes[0]), [1.0, 0.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(np.abs(axes[1]), [0.0, 0.0, 1.0], atol=1e-6)
    assert len(diagnostics.motion_axes(coords[grid[:, 1] == 0.0], grid[grid[:, 1] == 0.0, 0])) == 1


def test_fixed_snr_accuracy_is_the_68th_percentile_of_the_error():
    """Posterior samples scattered by σ around the truth: the 68th percentile of |sample − truth| is that of
    a half-normal, 0.994 σ; the mean's error is the mean's own scatter; the lower SNR is the wider."""
    rng = np.random.default_rng(5)
    parts = {"snr": [], "theta_true": [], "samples": [], "mean": [], "std": []}
    for snr, sigma in ((0.1, 1.0), (0.01, 2.5)):
        truth = rng.uniform(-5, 5, 20000)
        mean = truth + rng.normal(size=truth.shape) * sigma
        samples = mean[:, None] + rng.normal(size=(len(truth), 3)) * sigma
        for key, value in (
            ("snr", np.full(len(truth), snr)),
            ("theta_true", truth),
            ("samples", samples),
            ("mean", mean),
            ("std", np.full(len(truth), sigma)),
        ):
            parts[key].append(value)
    sim = {f"fixed_snr_{key}": np.concatenate(value) for key, value in parts.items()}
    found = diagnostics.fixed_snr_accuracy(sim)
    assert [entry["snr"] for entry in found] == [0.1, 0.01]
    for entry, sigma in zip(found, (1.0, 2.5)):
        # a sample lies σ√2 from the truth (mean's scatter and the posterior's), the mean σ from it
        assert entry["p68_error_sample_A"] == pytest.approx(0.994 * sigma * np.sqrt(2), rel=0.03)
        assert entry["p68_error_mean_A"] == pytest.approx(0.994 * sigma, rel=0.03)
        assert entry["mean_std_A"] == sigma
    # the demo trains on SNR 0.1–2: the SNR 0.01 set is outside its prior, flagged and warned about once
    warnings = diagnostics.mark_training_snr(found, [0.1, 2.0])
    assert [entry["within_training_snr"] for entry in found] == [True, False]
    assert len(warnings) == 1 and "fixed SNR 0.01 lies outside the training prior" in warnings[0]
