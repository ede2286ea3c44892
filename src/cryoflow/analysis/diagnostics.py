"""Numbers that say whether to trust the posteriors (numpy only).

* MMD: unbiased squared maximum mean discrepancy between simulated and
  experimental latents with a Gaussian kernel k(x, y) = exp(−|x − y|² / h),
  h the median pairwise squared distance of the pooled sample, and a
  permutation p-value.
* Calibration: empirical coverage of central credible intervals on held-out
  simulations, against their nominal level.
* Simulation-based calibration: the rank of the true θ among posterior
  samples, turned into a randomized probability integral transform that is
  uniform on [0, 1] exactly when the posterior is calibrated, with a
  Kolmogorov–Smirnov test of uniformity.
* Accuracy against a known truth: Pearson r, median absolute error, coverage;
  posterior width against the angle between the beam and the direction of
  motion (views along the motion hide it).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cryoflow.chunks import chunks
from cryoflow.physics.theta import columns, reference_index, suffix


def squared_distances(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    xx = np.sum(x * x, axis=1)[:, None]
    yy = np.sum(y * y, axis=1)[None, :]
    return np.maximum(xx + yy - 2.0 * x @ y.T, 0.0)


def median_heuristic(pooled: np.ndarray) -> float:
    """Median pairwise squared distance (off-diagonal) of the pooled sample."""
    d2 = squared_distances(pooled, pooled)
    upper = d2[np.triu_indices(len(pooled), k=1)]
    return float(np.median(upper))


def _mmd2_of_labels(k_offdiag: np.ndarray, labels: np.ndarray, n: int) -> np.ndarray:
    """Unbiased MMD² for each column of ``labels`` (N, P) of 0/1, n ones per column: the points labelled 1
    are one sample, the rest the other. ``k_offdiag``: the pooled kernel matrix with a zero diagonal.

    With z a column, z'Kz sums the first sample's pairs, (1−z)'K(1−z) = total − 2·1'Kz + z'Kz the
    second's and z'K(1−z) = 1'Kz − z'Kz the cross pairs, so a block of permutations costs one matrix product.
    """
    m = len(k_offdiag) - n
    kz = k_offdiag @ labels
    within = np.einsum("ip,ip->p", labels, kz)
    across = kz.sum(axis=0)
    total = k_offdiag.sum()
    return within / (n * (n - 1)) + (total - 2.0 * across + within) / (m * (m - 1)) - 2.0 * (across - within) / (n * m)


def mmd_test(
    x: np.ndarray, y: np.ndarray, n_permutations: int = 500, seed: int = 0, max_points: int = 2000
) -> dict[str, float]:
    """Unbiased MMD² of samples x (n, d) and y (m, d) with a permutation p-value.

    At most ``max_points`` points of each sample are used (a seeded subset). Permutations are scored in
    blocks of 64 by one matrix product each (``_mmd2_of_labels``).
    """
    rng = np.random.default_rng(seed)
    if len(x) > max_points:
        x = x[rng.choice(len(x), max_points, replace=False)]
    if len(y) > max_points:
        y = y[rng.choice(len(y), max_points, replace=False)]
    pooled = np.concatenate([x, y]).astype(np.float64)
    bandwidth = median_heuristic(pooled)
    k = np.exp(-squared_distances(pooled, pooled) / bandwidth)
    np.fill_diagonal(k, 0.0)
    n = len(x)
    first = np.zeros((len(pooled), 1))
    first[:n] = 1.0
    observed = float(_mmd2_of_labels(k, first, n)[0])
    exceed = 0
    for part in chunks(n_permutations, 64):
        block = np.zeros((len(pooled), part.stop - part.start))
        for column in range(block.shape[1]):
            block[rng.permutation(len(pooled))[:n], column] = 1.0
        exceed += int(np.sum(_mmd2_of_labels(k, block, n) >= observed - 1e-12 * abs(observed)))
    return {"mmd2": observed, "pvalue": (exceed + 1) / (n_permutations + 1), "bandwidth": bandwidth}


WHITENING_MIN_GAIN = 0.1  # whitening must lower MMD² by this fraction to count as lowering it


def whitening_verdict(whitened: dict, raw: dict, alpha: float = 0.05) -> str:
    """Plain words on two ``mmd_test`` results: whitened and raw particles against simulations from the prior.

    This prior-predictive view asks whether the ensemble and priors cover the data; a dataset whose θ
    population or SNRs differ from the prior fails it even when the simulator is right, so its advice
    points to the posterior-predictive check (``cryoflow.analysis.predictive``) for the simulator itself.
    """
    if whitened["pvalue"] >= alpha:
        return (
            f"Whitened particles are indistinguishable from simulations drawn from the prior (MMD p = "
            f"{whitened['pvalue']:.3g}): the ensemble and priors cover these data."
        )
    better = whitened["mmd2"] < (1.0 - WHITENING_MIN_GAIN) * raw["mmd2"]
    change = "lowers" if better else "does not lower"
    return (
        f"Particle latents differ from those of simulations drawn from the prior (MMD p = "
        f"{whitened['pvalue']:.3g}); whitening {change} the mismatch (MMD² {whitened['mmd2']:.3g} whitened vs "
        f"{raw['mmd2']:.3g} raw). A dataset whose conformations or SNRs are not spread like the prior differs "
        "this way even when the simulator is right; whether the simulator explains the particles is the "
        "posterior-predictive check's verdict (ppc_verdict)."
    )


def interval_coverage(samples: np.ndarray, truth: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """Fraction of truths inside the central credible interval of each level, from posterior samples."""
    out = []
    for level in levels:
        low = np.quantile(samples, 0.5 - level / 2, axis=1)
        high = np.quantile(samples, 0.5 + level / 2, axis=1)
        out.append(np.mean((truth >= low) & (truth <= high)))
    return np.asarray(out)


def accuracy(mean: np.ndarray, q05: np.ndarray, q95: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Pearson r of posterior mean vs truth, median |error| in Å, 90 % interval coverage."""
    return {
        "pearson_r": float(np.corrcoef(mean, truth)[0, 1]),
        "median_abs_error_A": float(np.median(np.abs(mean - truth))),
        "coverage_90": float(np.mean((truth >= q05) & (truth <= q95))),
    }


def sbc_pit(samples: np.ndarray, truth: np.ndarray, seed: int = 0) -> np.ndarray:
    """Randomized PIT (n,) from SBC ranks: (#{samples < truth} + U) / (L + 1), U ~ uniform(0, 1).

    For a calibrated posterior the rank is uniform on {0, …, L}, so the PIT is
    uniform on [0, 1] (ties with the truth, probability zero, count as below).
    """
    rank = np.sum(samples < truth[:, None], axis=1)
    jitter = np.random.default_rng(seed).uniform(size=len(truth))
    return (rank + jitter) / (samples.shape[1] + 1)


def ks_uniform_test(values: np.ndarray) -> tuple[float, float]:
    """Kolmogorov–Smirnov statistic D of ``values`` against uniform(0, 1) and its asymptotic p-value.

    p = Q_KS((√n + 0.12 + 0.11/√n) D), Q_KS(λ) = 2 Σ_k (−1)^(k−1) exp(−2k²λ²) (Stephens' correction).
    """
    x = np.sort(np.asarray(values, dtype=np.float64))
    n = len(x)
    ranks = np.arange(1, n + 1)
    d = float(max(np.max(ranks / n - x), np.max(x - (ranks - 1) / n)))
    lam = (np.sqrt(n) + 0.12 + 0.11 / np.sqrt(n)) * d
    if lam < 0.2:
        return d, 1.0
    k = np.arange(1, 101)
    p = 2.0 * np.sum((-1.0) ** (k - 1) * np.exp(-2.0 * k**2 * lam**2))
    return d, float(np.clip(p, 0.0, 1.0))


def motion_axis(coords_A: np.ndarray) -> np.ndarray:
    """Unit vector (3,) of the dominant direction of motion across templates (T, N, 3).

    The displacement field between the first and the last template, per bead,
    is reduced to its leading right singular vector.
    """
    displacement = coords_A[-1] - coords_A[0]
    _, _, vt = np.linalg.svd(displacement - displacement.mean(0), full_matrices=False)
    return vt[0]


def motion_axes(coords_A: np.ndarray, theta_A: np.ndarray) -> list[np.ndarray]:
    """One motion axis (3,) per θ coordinate: ``motion_axis`` of all templates for a 1-D θ; for a 2-D
    grid, of the templates along each coordinate's own axis through the reference (the other one fixed)."""
    theta_A = np.asarray(theta_A, dtype=np.float64)
    if theta_A.ndim == 1:
        return [motion_axis(coords_A)]
    reference = theta_A[reference_index(theta_A)]
    axes = []
    for d in range(theta_A.shape[1]):
        others = np.delete(np.arange(theta_A.shape[1]), d)
        line = np.flatnonzero(np.all(np.isclose(theta_A[:, others], reference[others]), axis=1))
        axes.append(motion_axis(coords_A[line[np.argsort(theta_A[line, d])]]))
    return axes


def view_angle_deg(beam_directions: np.ndarray, axis: np.ndarray) -> np.ndarray:
    """Angle (0–90°) between each beam direction (n, 3), in the template frame, and the motion axis."""
    cosine = np.abs(beam_directions @ axis) / np.linalg.norm(beam_directions, axis=1)
    return np.degrees(np.arccos(np.clip(cosine, 0.0, 1.0)))


CREDIBILITY_LEVELS = np.linspace(0.05, 0.95, 19)
EDGE_BAND = 0.05  # outer fraction of the prior range, on each side, that counts as its edge
EDGE_MASS_ATYPICAL = 0.5  # posteriors with more mass than this in the edge bands are flagged atypical


def theta_dims(theta_true: np.ndarray) -> int:
    """1 for true θ values (n,), 2 for (n, 2)."""
    return 1 if np.ndim(theta_true) == 1 else int(np.shape(theta_true)[1])


def edge_cells(grid: np.ndarray) -> np.ndarray:
    """Which cells of equal cell centres ``grid`` (G,) lie within ``EDGE_BAND`` of either end of the range.

    Posterior mass piled up there (the ``edge_mass`` of a posterior) says
    the image looks like no template in the range: a contaminant, junk or a
    state outside the ensemble (the paper's atypical particles).
    """
    width = grid[1] - grid[0]
    low, high = grid[0] - 0.5 * width, grid[-1] + 0.5 * width
    band = EDGE_BAND * (high - low)
    return (grid < low + band) | (grid > high - band)


def validation_summary(sim: dict, seed: int = 0) -> tuple[dict[str, Any], np.ndarray]:
    """Calibration of a model on its held-out simulations (the model report's numbers).

    Returns (numbers, empirical coverage at ``CREDIBILITY_LEVELS``, (L,) or (2, L)). For a 2-D θ every
    per-coordinate number carries a ``_theta1`` / ``_theta2`` suffix; ``coverage_error_max`` (the worse
    coordinate's) and ``sbc_ks_pvalue`` (the lower) summarize both.
    """
    n_dims = theta_dims(sim["theta_true"])
    numbers: dict[str, Any] = {"n_simulations": int(len(sim["theta_true"]))}
    coverage = []
    for d in range(n_dims):
        sim_d = {key: columns(sim[key], n_dims)[d] for key in ("samples", "theta_true", "mean", "q05", "q95")}
        coverage.append(interval_coverage(sim_d["samples"], sim_d["theta_true"], CREDIBILITY_LEVELS))
        found: dict[str, float] = accuracy(sim_d["mean"], sim_d["q05"], sim_d["q95"], sim_d["theta_true"])
        found["coverage_error_max"] = float(np.max(np.abs(coverage[-1] - CREDIBILITY_LEVELS)))
        found["sbc_ks_statistic"], found["sbc_ks_pvalue"] = ks_uniform_test(
            sbc_pit(sim_d["samples"], sim_d["theta_true"], seed)
        )
        numbers.update({key + suffix(d, n_dims): value for key, value in found.items()})
    numbers["fixed_snr"] = fixed_snr_accuracy(sim)
    if "junk_p_particle" in sim:
        numbers["particle_output"] = particle_output_accuracy(
            sim["p_particle"], sim["junk_p_particle"], sim["junk_kind"]
        )
    numbers["coverage_error_max"] = max(numbers["coverage_error_max" + suffix(d, n_dims)] for d in range(n_dims))
    numbers["sbc_ks_pvalue"] = min(numbers["sbc_ks_pvalue" + suffix(d, n_dims)] for d in range(n_dims))
    return numbers, coverage[0] if n_dims == 1 else np.stack(coverage)


def particle_output_accuracy(p_particles: np.ndarray, p_junk: np.ndarray, junk_kind: np.ndarray) -> dict:
    """How a junk-aware model's particle output separates held-out particles from held-out junk: the area
    under the ROC curve, and the share on the right side of 0.5 for particles and for each kind of junk
    (``junk_kind``: the kind's name per image)."""
    p_particles, p_junk = np.asarray(p_particles, float), np.asarray(p_junk, float)
    ranks = np.argsort(np.argsort(np.concatenate([p_particles, p_junk]))) + 1.0
    auc = (ranks[: len(p_particles)].sum() - len(p_particles) * (len(p_particles) + 1) / 2) / (
        len(p_particles) * len(p_junk)
    )
    out = {"auc": round(float(auc), 4), "particles_above_half": round(float(np.mean(p_particles >= 0.5)), 4)}
    for name in sorted(set(np.asarray(junk_kind).tolist())):
        out[f"{name}_below_half"] = round(float(np.mean(p_junk[np.asarray(junk_kind) == name] < 0.5)), 4)
    return out


def mark_training_snr(entries: list[dict], snr_range) -> list[str]:
    """Mark each fixed-SNR entry (``fixed_snr_accuracy``'s or ``likelihood_comparison``'s) with
    ``within_training_snr``: whether its SNR lies inside the prior the estimator was trained on. Outside it the
    estimator extrapolates and its numbers say nothing of the method (the exact posterior needs no SNR prior).
    Returns one warning per SNR outside."""
    low, high = (float(v) for v in snr_range)
    outside = []
    for entry in entries:
        entry["within_training_snr"] = bool(low * (1 - 1e-9) <= entry["snr"] <= high * (1 + 1e-9))
        if not entry["within_training_snr"] and entry["snr"] not in outside:
            outside.append(entry["snr"])
    return [
        f"fixed SNR {snr:g} lies outside the training prior simulator.snr_range [{low:g}, {high:g}]: the estimator "
        "is measured where it never trained (validation.fixed_snr)"
        for snr in outside
    ]


def _p68(values) -> float:
    """The 68th percentile of |values| (the paper's Fig. 2C accuracy)."""
    return float(np.percentile(np.abs(values), 68))


def fixed_snr_accuracy(sim: dict) -> list[dict]:
    """The paper's accuracy (Fig. 2C) on held-out sets at one fixed SNR each.

    Per SNR: the 68th percentile of |one posterior sample − true θ| (the sample drawn first for each
    image), the same for the posterior mean, and the mean posterior σ, per θ coordinate (suffixed for
    a 2-D θ). ``sim`` holds the ``fixed_snr_*`` arrays of the validate rule.
    """
    if "fixed_snr_snr" not in sim or not len(sim["fixed_snr_snr"]):
        return []
    out = []
    n_dims = theta_dims(sim["fixed_snr_theta_true"])
    for snr in np.unique(sim["fixed_snr_snr"])[::-1]:
        rows = sim["fixed_snr_snr"] == snr
        entry = {"snr": float(snr), "n": int(rows.sum())}
        for d in range(n_dims):
            truth = columns(sim["fixed_snr_theta_true"][rows], n_dims)[d]
            sample = columns(sim["fixed_snr_samples"][rows][:, 0], n_dims)[d]
            mean = columns(sim["fixed_snr_mean"][rows], n_dims)[d]
            std = columns(sim["fixed_snr_std"][rows], n_dims)[d]
            entry["p68_error_sample_A" + suffix(d, n_dims)] = _p68(sample - truth)
            entry["p68_error_mean_A" + suffix(d, n_dims)] = _p68(mean - truth)
            entry["mean_std_A" + suffix(d, n_dims)] = float(np.mean(std))
        out.append(entry)
    return out


def contrast_correlation(mean_particle: np.ndarray, mean_simulation: np.ndarray, radius_px: float) -> float:
    """Pearson correlation, inside a centred disc, of the mean particle and the mean simulated image.

    Averaged over many random poses both are round blobs; with the same contrast they correlate
    positively, with opposite contrast (protein dark where the simulator makes it light) negatively.
    """
    box = mean_particle.shape[-1]
    y, x = np.mgrid[:box, :box] - box // 2
    inside = x**2 + y**2 <= radius_px**2
    a, b = mean_particle[inside], mean_simulation[inside]
    a, b = a - a.mean(), b - b.mean()
    return float(np.sum(a * b) / max(np.sqrt(np.sum(a * a) * np.sum(b * b)), 1e-12))


def summarize(
    post: dict,
    sim: dict,
    validation: dict,
    truth=None,
    n_permutations: int = 500,
    max_points: int = 1000,
    seed: int = 0,
    whitening: dict | None = None,
):
    """A dataset report's numbers: MMD of latents, accuracy against a known truth, the model's calibration.

    ``validation`` is the model's ``validation_summary``; its numbers are kept under ``validation`` and
    ``coverage_error_max`` and ``sbc_ks_pvalue`` at the top level. For a 2-D θ every per-coordinate number
    carries a ``_theta1`` / ``_theta2`` suffix.
    ``whitening`` (latents of one particle subset, ``latent_whitened`` and
    ``latent_raw``) adds ``mmd2_whitened``/``mmd2_raw``, their p-values and ``mmd_verdict``.
    """
    summary: dict[str, Any] = {"n_particles": int(len(post["mean"]))}
    mmd = mmd_test(sim["latent"], post["latent"], n_permutations, seed, max_points)
    summary.update({"mmd2": mmd["mmd2"], "mmd_pvalue": mmd["pvalue"], "mmd_bandwidth": mmd["bandwidth"]})
    n_dims = theta_dims(sim["theta_true"])
    summary["validation"] = validation
    summary["coverage_error_max"] = validation["coverage_error_max"]
    summary["sbc_ks_pvalue"] = validation["sbc_ks_pvalue"]
    if truth is not None:
        for d in range(n_dims):
            post_d = [columns(post[key], n_dims)[d] for key in ("mean", "q05", "q95")]
            mean, q05, q95 = post_d
            found = accuracy(mean, q05, q95, columns(np.asarray(truth), n_dims)[d])
            summary.update({key + suffix(d, n_dims): value for key, value in found.items()})
    if whitening is not None:
        tests = {}
        for label in ("whitened", "raw"):
            tests[label] = mmd_test(sim["latent"], whitening[f"latent_{label}"], n_permutations, seed, max_points)
            summary[f"mmd2_{label}"], summary[f"mmd_pvalue_{label}"] = tests[label]["mmd2"], tests[label]["pvalue"]
        summary["mmd_verdict"] = whitening_verdict(tests["whitened"], tests["raw"])
    if "edge_mass" in post:
        summary["n_edge_posteriors"] = int(np.sum(post["edge_mass"] > EDGE_MASS_ATYPICAL))
    if "p_particle" in post:  # junk-aware models: particles the model does not take for a centred particle
        summary["median_p_particle"] = float(np.median(post["p_particle"]))
        summary["n_p_particle_below_half"] = int(np.sum(post["p_particle"] < 0.5))
    if "shard_seconds" in post:
        summary["inference_seconds"] = float(np.sum(post["shard_seconds"]))
        summary["inference_particles_per_s"] = float(len(post["mean"]) / max(summary["inference_seconds"], 1e-9))
        summary["inference_device"] = ", ".join(sorted({str(d) for d in post["shard_device"]}))
    return summary


def likelihood_comparison(ref: dict) -> list[dict[str, Any]]:
    """Per mode and SNR: the Fig. 2C metrics of the exact posterior and of the estimator on the same images."""
    out = []
    for mode in dict.fromkeys(ref["mode"].tolist()):
        for snr in sorted(set(ref["snr"][ref["mode"] == mode].tolist()), reverse=True):
            rows = (ref["mode"] == mode) & (ref["snr"] == snr)
            truth = ref["theta_true"][rows]
            entry = {"nuisance": mode, "snr": float(snr), "n": int(rows.sum())}
            for name in ("exact", "estimator"):
                entry[f"{name}_p68_error_sample_A"] = _p68(ref[f"{name}_samples"][rows][:, 0] - truth)
                entry[f"{name}_p68_error_mean_A"] = _p68(ref[f"{name}_mean"][rows] - truth)
                entry[f"{name}_mean_std_A"] = float(np.mean(ref[f"{name}_std"][rows]))
            entry["median_kl_exact_to_estimator"] = float(np.median(ref["kl_exact_to_estimator"][rows]))
            entry["median_std_ratio"] = float(np.median(ref["estimator_std"][rows] / ref["exact_std"][rows]))
            entry["p68_ratio_estimator_to_exact"] = entry["estimator_p68_error_sample_A"] / max(
                entry["exact_p68_error_sample_A"], 1e-12
            )
            if "grid_A" in ref:  # the mean excess −log density at the true θ: the expected KL, with its error
                excess = excess_at_truth(
                    ref["exact_log_density"][rows], ref["estimator_log_density"][rows], ref["grid_A"], truth
                )
                entry["excess_nll"] = float(np.mean(excess))
                entry["excess_nll_se"] = (
                    float(np.std(excess, ddof=1) / np.sqrt(len(excess))) if len(excess) > 1 else 0.0
                )
            out.append(entry)
    return out


def log_density_at(log_density: np.ndarray, grid: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """Normalized log densities per Å (B,) at ``theta``, from log densities (B, G) on equally spaced cell
    centres ``grid``, linearly interpolated between them."""
    log_density = np.asarray(log_density, dtype=np.float64)
    step = float(grid[1] - grid[0])
    normed = log_density - np.logaddexp.reduce(log_density, axis=1, keepdims=True) - np.log(step)
    return np.array([np.interp(t, grid, row) for t, row in zip(theta, normed, strict=True)])


def excess_at_truth(log_p: np.ndarray, log_q: np.ndarray, grid: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """Per image (B,): −log q(θ_true) − (−log p(θ_true)), the estimator's log densities ``log_q`` against the exact
    ``log_p`` (both (B, G) on the cell centres ``grid``); its mean over images is the expected KL(p ‖ q)."""
    return log_density_at(log_p, grid, theta) - log_density_at(log_q, grid, theta)


EXCESS_NLL_GOAL = 0.3  # nats per image: an estimator this close leaves little for more training to gain


def likelihood_verdict(entries: list[dict]) -> str | None:
    """One sentence on how much the estimator leaves behind against the exact posterior, from
    ``likelihood_comparison``'s entries (those inside the training SNR prior where marked)."""
    scored = [e for e in entries if "excess_nll" in e and e.get("within_training_snr", True)]
    if not scored:
        return None
    worst = max(scored, key=lambda e: e["excess_nll"])
    where = f"{worst['excess_nll']:.2f} ± {worst['excess_nll_se']:.2f} nats per image at SNR {worst['snr']:g}"
    if worst["excess_nll"] <= EXCESS_NLL_GOAL:
        return (
            f"The estimator is within {EXCESS_NLL_GOAL} nats of the exact posterior at every SNR measured (at most "
            f"{where}): more training would gain little."
        )
    return (
        f"The estimator leaves {where} against the exact posterior ({worst['nuisance']} nuisances): its posteriors "
        "are wider than the images allow. Longer training (train.steps) or the production preset "
        "(config/production.yaml, on a GPU) would narrow them."
    )


def likelihood_agreement(ref: dict) -> dict[str, float | int]:
    """Particles: how often the exact and the estimated 90 % intervals do not overlap, and the median KL."""
    disjoint = (ref["exact_q95"] < ref["estimator_q05"]) | (ref["estimator_q95"] < ref["exact_q05"])
    return {
        "n": int(len(disjoint)),
        "n_disjoint_90": int(disjoint.sum()),
        "fraction_disjoint_90": float(disjoint.mean()) if len(disjoint) else 0.0,
        "median_kl_exact_to_estimator": float(np.median(ref["kl_exact_to_estimator"])),
        "median_std_ratio": float(np.median(ref["estimator_std"] / ref["exact_std"])),
    }
