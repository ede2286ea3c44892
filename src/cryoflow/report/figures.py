"""Report figures (matplotlib, Agg backend) for the workflow's HTML report."""

from __future__ import annotations

import textwrap

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from cryoflow.io.fileio import atomic_path  # noqa: E402
from cryoflow.physics.theta import columns  # noqa: E402
from cryoflow.physics.theta import label as theta_label  # noqa: E402


def _save(fig, path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    plt.close(fig)


def plot_loss(history: list[dict], prior_loss: float, path) -> None:
    """Training and validation −log q against the step, with the prior's loss for scale."""
    steps = [row["step"] for row in history]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(steps, [row["train_loss"] for row in history], label="training")
    ax.plot(steps, [row["val_loss"] for row in history], label="validation")
    ax.axhline(prior_loss, color="grey", ls="--", label="prior (no information)")
    ax.set_xlabel("step")
    ax.set_ylabel("−log q(θ | image) [nats]")
    ax.legend()
    _save(fig, path)


def plot_ensemble(theta_A: np.ndarray, rmsd_A: np.ndarray, path) -> None:
    """The templates: θ against template index (θ₁ against θ₂ on a 2-D grid), and their pairwise RMSD matrix."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.3))
    if np.ndim(theta_A) == 1:
        axes[0].plot(np.arange(len(theta_A)), theta_A, "o-")
        axes[0].axhline(0.0, color="0.7", lw=0.8)
        axes[0].set_xlabel("template")
        axes[0].set_ylabel("θ [Å]")
        axes[0].set_title("templates ordered by θ")
    else:
        axes[0].scatter(theta_A[:, 0], theta_A[:, 1], s=12)
        if len(theta_A) <= 100:
            for i, (t1, t2) in enumerate(theta_A):
                axes[0].annotate(str(i), (t1, t2), fontsize=7, xytext=(2, 2), textcoords="offset points")
        axes[0].set_xlabel("θ₁ [Å] (first mode)")
        axes[0].set_ylabel("θ₂ [Å] (second mode)")
        axes[0].set_title("templates on the 2-D θ grid")
    image = axes[1].imshow(rmsd_A, cmap="viridis", origin="lower")
    fig.colorbar(image, ax=axes[1], label="RMSD [Å]")
    axes[1].set_xlabel("template")
    axes[1].set_ylabel("template")
    axes[1].set_title("pairwise RMSD after superposition")
    _save(fig, path)


def plot_posteriors(post: dict, theta_range_A, path, truth=None, edge_threshold: float = 0.5) -> None:
    """Histogram of posterior means, 2-D histogram of samples per particle, width vs mean.

    Particles with more than ``edge_threshold`` of their posterior mass at the
    prior's edges are drawn in red in the width-vs-mean panel. A 2-D θ gets
    ``plot_posteriors_2d``.
    """
    if np.ndim(post["mean"]) == 2:
        plot_posteriors_2d(post, theta_range_A, path, truth, edge_threshold)
        return
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    low, high = theta_range_A
    bins = np.linspace(low, high, 41)
    axes[0].hist(post["mean"], bins=bins, color="C0", alpha=0.8, label="posterior means")
    if truth is not None:
        axes[0].hist(truth, bins=bins, histtype="step", color="k", label="true θ")
    axes[0].set_xlabel("θ [Å]")
    axes[0].set_ylabel("particles")
    axes[0].legend()
    order = np.argsort(post["mean"])
    samples = post["samples"][order]
    rows = np.repeat(np.arange(len(samples)), samples.shape[1])
    axes[1].hist2d(samples.ravel(), rows, bins=[bins, min(200, len(samples))], cmap="viridis")
    axes[1].set_xlabel("θ [Å]")
    axes[1].set_ylabel("particle (sorted by posterior mean)")
    axes[1].set_title("posterior samples per particle")
    edge = edge_flags(post, edge_threshold)
    axes[2].scatter(post["mean"][~edge], post["std"][~edge], s=4, alpha=0.5, label="typical")
    if edge.any():
        axes[2].scatter(
            post["mean"][edge], post["std"][edge], s=8, color="C3", label=f"at the prior's edge ({edge.sum()})"
        )
    axes[2].legend()
    axes[2].set_xlabel("posterior mean θ [Å]")
    axes[2].set_ylabel("posterior σ [Å]")
    _save(fig, path)


def edge_flags(post: dict, edge_threshold: float) -> np.ndarray:
    if "edge_mass" in post:
        return post["edge_mass"] > edge_threshold
    return np.zeros(len(post["mean"]), bool)


def plot_posteriors_2d(post: dict, theta_range_A, path, truth=None, edge_threshold: float = 0.5, n_joint: int = 4):
    """A 2-D θ (the paper's SI Fig. S1): posterior means on the θ plane, each coordinate's marginal
    histogram of means against the truth, and the joint posteriors of ``n_joint`` particles."""
    ranges = np.asarray(theta_range_A, dtype=float)
    edges = [np.linspace(low, high, 41) for low, high in ranges]
    fig, axes = plt.subplots(2, max(3, n_joint), figsize=(4.2 * max(3, n_joint), 8.8), squeeze=False)
    fig.subplots_adjust(hspace=0.35, wspace=0.3)
    edge = edge_flags(post, edge_threshold)
    ax = axes[0, 0]
    ax.hist2d(post["mean"][:, 0], post["mean"][:, 1], bins=edges, cmap="viridis")
    if edge.any():
        ax.scatter(*post["mean"][edge].T, s=6, color="C3", label=f"at the prior's edge ({edge.sum()})")
        ax.legend(fontsize=8)
    ax.set_xlabel("posterior mean θ₁ [Å]")
    ax.set_ylabel("posterior mean θ₂ [Å]")
    ax.set_title("posterior means")
    for d in range(2):
        ax = axes[0, d + 1]
        ax.hist(post["mean"][:, d], bins=edges[d], color="C0", alpha=0.8, label="posterior means")
        if truth is not None:
            ax.hist(truth[:, d], bins=edges[d], histtype="step", color="k", label="true θ")
        ax.set_xlabel(f"θ{'₁₂'[d]} [Å]")
        ax.set_ylabel("particles")
        ax.legend(fontsize=8)
    for ax in axes[0, 3:]:
        ax.set_axis_off()
    width = np.hypot(post["std"][:, 0], post["std"][:, 1])
    picks = np.argsort(width)[np.linspace(0, len(width) - 1, min(n_joint, len(width))).astype(int)]
    for col, i in enumerate(picks):
        ax = axes[1, col]
        coarse = [e[::2] for e in edges]  # 20 bins a side: a few hundred samples fill them
        ax.hist2d(post["samples"][i][:, 0], post["samples"][i][:, 1], bins=coarse, cmap="magma")
        if truth is not None:
            ax.scatter(*truth[i], marker="x", s=60, color="cyan", label="true θ")
            ax.legend(fontsize=8, loc="upper right")
        ax.set_xlabel("θ₁ [Å]")
        ax.set_ylabel("θ₂ [Å]")
        ax.set_title(f"particle {i + 1}: σ = ({post['std'][i, 0]:.2f}, {post['std'][i, 1]:.2f}) Å", fontsize=9)
    for ax in axes[1, len(picks) :]:
        ax.set_axis_off()
    _save(fig, path)


def distinct_points(points: np.ndarray, k: int) -> np.ndarray:
    """Indices of k points spread over a 2-D embedding: the most central, then farthest-point sampling."""
    chosen = [int(np.argmin(np.linalg.norm(points - np.median(points, axis=0), axis=1)))]
    distance = np.linalg.norm(points - points[chosen[0]], axis=1)
    while len(chosen) < min(k, len(points)):
        chosen.append(int(np.argmax(distance)))
        distance = np.minimum(distance, np.linalg.norm(points - points[chosen[-1]], axis=1))
    return np.array(chosen)


def plot_latents(
    embedding_sim, embedding_exp, width_exp, mmd2: float, mmd_pvalue: float, path, thumbnails=None, marked=None
) -> None:
    """UMAP of latents: simulated vs experimental, experimental coloured by posterior width (Fig. 4C/D).

    ``thumbnails`` (k, box, box) are shown below, lettered, for the
    experimental points ``marked`` (k indices into ``embedding_exp``), as in Fig. 4E–G.
    """
    k = 0 if thumbnails is None else len(thumbnails)
    fig = plt.figure(figsize=(11, 4.5 + (2.4 if k else 0)))
    grid = fig.add_gridspec(2 if k else 1, max(k, 2), height_ratios=[4.5, 2.2] if k else [1], hspace=0.4, wspace=0.45)
    half = max(k, 2) // 2
    axes = [fig.add_subplot(grid[0, :half]), fig.add_subplot(grid[0, half:])]
    (sim_x, sim_y), (exp_x, exp_y) = embedding_sim.T, embedding_exp.T
    axes[0].scatter(sim_x, sim_y, s=4, alpha=0.5, label="simulated")
    axes[0].scatter(exp_x, exp_y, s=4, alpha=0.5, label="experimental")
    axes[0].legend()
    axes[0].set_title(f"MMD² = {mmd2:.4g}, p = {mmd_pvalue:.3g}")
    sc = axes[1].scatter(exp_x, exp_y, s=4, c=width_exp, cmap="magma")
    fig.colorbar(sc, ax=axes[1], label="posterior σ [Å]")
    axes[1].set_title("experimental, coloured by posterior width")
    for ax in axes:
        ax.set_xlabel("UMAP 1")
        ax.set_ylabel("UMAP 2")
    for col in range(k):
        letter = chr(ord("A") + col)
        x, y = embedding_exp[marked[col]]
        for ax in axes:
            ax.annotate(
                letter,
                (x, y),
                fontsize=11,
                fontweight="bold",
                ha="center",
                va="center",
                bbox={"boxstyle": "circle,pad=0.15", "fc": "white", "alpha": 0.8},
            )
        thumb = fig.add_subplot(grid[1, col])
        thumb.imshow(thumbnails[col], cmap="gray")
        thumb.set_title(f"{letter}: σ = {width_exp[marked[col]]:.2f} Å", fontsize=9)
        thumb.set_axis_off()
    _save(fig, path)


def plot_whitening_mmd(embedding_sim, embedding_whitened, embedding_raw, summary: dict, path) -> None:
    """Simulated latents against the same particles whitened and raw (the paper's SI Fig. S5), with the verdict."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 5.2), sharex=True, sharey=True)
    for ax, label, points in ((axes[0], "whitened", embedding_whitened), (axes[1], "raw", embedding_raw)):
        ax.scatter(*embedding_sim.T, s=4, alpha=0.4, label="simulated")
        ax.scatter(*points.T, s=4, alpha=0.5, color="C1" if label == "whitened" else "C3", label=f"{label} particles")
        ax.set_title(f"{label}: MMD² = {summary[f'mmd2_{label}']:.4g}, p = {summary[f'mmd_pvalue_{label}']:.3g}")
        ax.set_xlabel("UMAP 1")
        ax.legend()
    axes[0].set_ylabel("UMAP 2")
    fig.text(0.5, 0.01, textwrap.fill(summary["mmd_verdict"], 150), ha="center", va="bottom", fontsize=9)
    fig.subplots_adjust(bottom=0.22)
    _save(fig, path)


def _binned_median(ax, x, y, bins, log=False, color="C3", label="median"):
    edges = np.geomspace(x.min(), x.max(), bins + 1) if log else np.linspace(x.min(), x.max(), bins + 1)
    which = np.clip(np.digitize(x, edges) - 1, 0, bins - 1)
    centres, medians = [], []
    for b in range(bins):
        if np.any(which == b):
            centres.append(np.sqrt(edges[b] * edges[b + 1]) if log else 0.5 * (edges[b] + edges[b + 1]))
            medians.append(np.median(y[which == b]))
    ax.plot(centres, medians, color=color, marker="o", label=label)
    ax.legend()


def coverage_panel(ax, levels, coverage: np.ndarray) -> None:
    n_dims = len(coverage)
    ax.plot([0, 1], [0, 1], color="grey", ls="--")
    for d in range(n_dims):
        ax.plot(levels, coverage[d], marker="o", label=theta_label(d, n_dims))
    ax.set_xlabel("nominal credibility")
    ax.set_ylabel("empirical coverage")
    ax.set_title("expected coverage")


def sbc_panel(ax, pits, ks_pvalues, bins: int = 20) -> None:
    """SBC rank histograms with the 99 % band of a uniform histogram's counts."""
    n_dims = len(pits)
    colours, labels = [f"C{d}" for d in range(n_dims)], [theta_label(d, n_dims) for d in range(n_dims)]
    ax.hist(pits, bins=bins, range=(0, 1), color=colours, label=labels)
    expected = len(pits[0]) / bins
    band = 2.58 * np.sqrt(expected * (1 - 1 / bins))
    ax.axhspan(expected - band, expected + band, color="grey", alpha=0.3)
    ax.set_xlabel("SBC rank / (L + 1)")
    ax.set_ylabel("simulations")
    ax.set_title("SBC ranks, KS p = " + ", ".join(f"{p:.3g}" for p in ks_pvalues))


def accuracy_panel(ax, per_dim: list[dict]) -> None:
    n_dims = len(per_dim)
    for d, values in enumerate(per_dim):
        truth, mean, std = values["theta_true"], values["mean"], values["std"]
        ax.errorbar(truth, mean, yerr=std, fmt=".", alpha=0.3, label=theta_label(d, n_dims))
    lims = [min(v["theta_true"].min() for v in per_dim), max(v["theta_true"].max() for v in per_dim)]
    ax.plot(lims, lims, color="k")
    ax.set_xlabel("true θ [Å]")
    ax.set_ylabel("posterior mean ± σ [Å]")


def view_panels(axes, views: list, per_dim: list[dict]) -> None:
    """Posterior σ and error against the angle between the beam and each coordinate's direction of motion."""
    n_dims = len(per_dim)
    for ax, key, text in ((axes[0], "std", "posterior σ [Å]"), (axes[1], "error", "|mean − truth| [Å]")):
        for d, values in enumerate(per_dim):
            y = values["std"] if key == "std" else np.abs(values["mean"] - values["theta_true"])
            ax.scatter(views[d], y, s=4, alpha=0.3, color=f"C{d}")
            colour = "C3" if n_dims == 1 else f"C{d}"
            label = "median" if n_dims == 1 else f"{theta_label(d, n_dims)} median"
            _binned_median(ax, views[d], y, 9, color=colour, label=label)
        ax.set_xlabel("angle between beam and direction of motion [°]")
        ax.set_ylabel(text)


def plot_calibration(levels, coverage, sim: dict, pits, ks_pvalues, path, fixed_snr=(), exact=()) -> None:
    """Held-out simulations: coverage, SBC, accuracy, and posterior width against SNR and view (Fig. 2B/C).

    ``coverage`` (L,) or (D, L), ``pits`` and ``ks_pvalues`` lists with one entry per θ coordinate; a
    2-D θ draws each coordinate in its own colour. ``fixed_snr``: ``diagnostics.fixed_snr_accuracy``'s
    entries, drawn as the paper's 68th-percentile errors per fixed SNR; ``exact``:
    ``diagnostics.likelihood_comparison``'s entries, the explicit-likelihood posterior's values drawn
    over those bars as dashed lines (the paper's Fig. 2C dashed line).
    """
    coverage = np.atleast_2d(coverage)
    n_dims = len(coverage)
    per_dim = [{key: columns(sim[key], n_dims)[d] for key in ("theta_true", "mean", "std")} for d in range(n_dims)]
    fig, axes = plt.subplots(2, 4, figsize=(20, 8.5))
    plot_fixed_snr(axes[0, 3], fixed_snr, n_dims, exact)
    axes[1, 3].set_axis_off()
    coverage_panel(axes[0, 0], levels, coverage)
    sbc_panel(axes[0, 1], pits, ks_pvalues)
    accuracy_panel(axes[0, 2], per_dim)
    if n_dims > 1:
        for ax in axes[0, :3]:
            ax.legend()
    width = np.sqrt(sum(v["std"] ** 2 for v in per_dim))  # for a 2-D θ, the two widths combined
    ax = axes[1, 0]
    ax.scatter(sim["snr"], width, s=4, alpha=0.4)
    _binned_median(ax, sim["snr"], width, 8, log=True)
    ax.set_xscale("log")
    ax.set_xlabel("SNR")
    ax.set_ylabel("posterior σ [Å]" if n_dims == 1 else "posterior σ, √(σ₁² + σ₂²) [Å]")
    if "view_angle_deg" in sim:
        view_panels(axes[1, 1:3], columns(sim["view_angle_deg"], n_dims), per_dim)
    _save(fig, path)


def plot_populations(means: list, estimates: list, path) -> None:
    """Per θ coordinate: the histogram of posterior means beside the deconvolved population p(θ) with its
    bootstrap band, and the free-energy profile −ln p(θ) in kT."""
    fig, axes = plt.subplots(len(estimates), 2, figsize=(11, 3.8 * len(estimates)), squeeze=False)
    for d, (mean, est) in enumerate(zip(means, estimates)):
        name = theta_label(d, len(estimates))
        ax = axes[d, 0]
        ax.hist(mean, bins=est["edges_A"], density=True, color="grey", alpha=0.5, label="posterior means")
        ax.fill_between(est["theta_A"], est["low"], est["high"], color="C0", alpha=0.3, label="5–95 % bootstrap")
        ax.plot(est["theta_A"], est["density"], color="C0", label="population p(θ)")
        ax.set_xlabel(f"{name} [Å]")
        ax.set_ylabel("density [1/Å]")
        ax.legend(fontsize=8)
        ax = axes[d, 1]
        finite = np.isfinite(est["free_energy_kT"])
        ax.plot(est["theta_A"][finite], est["free_energy_kT"][finite], marker=".", color="C3")
        ax.set_xlabel(f"{name} [Å]")
        ax.set_ylabel("free energy −ln p [kT]")
    _save(fig, path)


def plot_fixed_snr(ax, fixed_snr, n_dims: int, exact=()) -> None:
    """Grouped bars per fixed SNR: 68th percentile of |sample − truth| and |mean − truth|, mean σ; the exact
    posterior's values (``exact``, on the first images of each set) as dashed lines, one style per nuisance mode."""
    if not fixed_snr:
        ax.set_axis_off()
        return
    keys = [
        ("p68_error_sample_A", "68 % |sample − θ|"),
        ("p68_error_mean_A", "68 % |mean − θ|"),
        ("mean_std_A", "mean σ"),
    ]
    width = 0.8 / (len(keys) * n_dims)
    for j, (key, text) in enumerate(keys):
        for d in range(n_dims):
            name = key if n_dims == 1 else f"{key}_theta{d + 1}"
            offset = (j * n_dims + d) * width
            values = [entry[name] for entry in fixed_snr]
            label = text if n_dims == 1 else f"{text} ({theta_label(d, n_dims)})"
            ax.bar(np.arange(len(fixed_snr)) + offset, values, width, label=label, color=f"C{j}", alpha=1.0 - 0.4 * d)
    snrs = [entry["snr"] for entry in fixed_snr]
    styles = {"marginalized": "--", "ctf_known": ":"}
    for entry in exact if n_dims == 1 else ():
        if entry["snr"] not in snrs:
            continue
        for j, (key, _) in enumerate(keys):
            x = snrs.index(entry["snr"]) + j * width
            ax.hlines(
                entry["exact_" + key],
                x - width / 2,
                x + width / 2,
                colors="k",
                linestyles=styles.get(entry["nuisance"], "--"),
            )
    for mode in dict.fromkeys(e["nuisance"] for e in exact if e["snr"] in snrs):
        n = min(e["n"] for e in exact if e["nuisance"] == mode)
        text = f"exact likelihood, {mode.replace('_', ' ')} (first {n} images)"
        ax.plot([], [], color="k", ls=styles.get(mode, "--"), label=text)
    outside = "\noutside training SNR"
    ticks = [f"SNR {e['snr']:g}" + ("" if e.get("within_training_snr", True) else outside) for e in fixed_snr]
    ax.set_xticks(np.arange(len(fixed_snr)) + 0.4 - width / 2, ticks)
    ax.set_ylabel("Å")
    ax.set_title("accuracy at fixed SNR (Fig. 2C)")
    ax.legend(fontsize=7 if exact else 8, loc="upper left")


def plot_examples(images, post: dict, indices, path) -> None:
    """Example particles (preprocessed; ``images[k]`` is particle ``indices[k]``) above their posterior samples."""
    n = len(indices)
    fig, axes = plt.subplots(2, n, figsize=(2.4 * n, 5), squeeze=False)
    for col, i in enumerate(indices):
        axes[0, col].imshow(images[col], cmap="gray")
        axes[0, col].set_axis_off()
        axes[0, col].set_title(f"particle {i + 1}")
        samples = post["samples"][i]
        if samples.ndim == 1:
            axes[1, col].hist(samples, bins=30, color="C0")
            axes[1, col].set_xlabel("θ [Å]")
            axes[1, col].set_yticks([])
        else:
            axes[1, col].hist2d(samples[:, 0], samples[:, 1], bins=25, cmap="magma")
            axes[1, col].set_xlabel("θ₁ [Å]")
            axes[1, col].set_ylabel("θ₂ [Å]")
    _save(fig, path)
