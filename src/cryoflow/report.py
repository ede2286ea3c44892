"""Report figures (matplotlib, Agg backend) for the workflow's HTML report."""

from __future__ import annotations

import textwrap

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import mrcfile  # noqa: E402
import numpy as np  # noqa: E402

from cryoflow.fileio import atomic_path  # noqa: E402


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
    """The templates: θ against template index, and their pairwise RMSD matrix."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.3))
    axes[0].plot(np.arange(len(theta_A)), theta_A, "o-")
    axes[0].axhline(0.0, color="0.7", lw=0.8)
    axes[0].set_xlabel("template")
    axes[0].set_ylabel("θ [Å]")
    axes[0].set_title("templates ordered by θ")
    image = axes[1].imshow(rmsd_A, cmap="viridis", origin="lower")
    fig.colorbar(image, ax=axes[1], label="RMSD [Å]")
    axes[1].set_xlabel("template")
    axes[1].set_ylabel("template")
    axes[1].set_title("pairwise RMSD after superposition")
    _save(fig, path)


def plot_posteriors(post: dict, theta_range_A, path, truth=None, edge_threshold: float = 0.5) -> None:
    """Histogram of posterior means, 2-D histogram of samples per particle, width vs mean.

    Particles with more than ``edge_threshold`` of their posterior mass at the
    prior's edges are drawn in red in the width-vs-mean panel.
    """
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    bins = np.linspace(*theta_range_A, 41)
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
    edge = post["edge_mass"] > edge_threshold if "edge_mass" in post else np.zeros(len(post["mean"]), bool)
    axes[2].scatter(post["mean"][~edge], post["std"][~edge], s=4, alpha=0.5, label="typical")
    if edge.any():
        axes[2].scatter(
            post["mean"][edge], post["std"][edge], s=8, color="C3", label=f"at the prior's edge ({edge.sum()})"
        )
    axes[2].legend()
    axes[2].set_xlabel("posterior mean θ [Å]")
    axes[2].set_ylabel("posterior σ [Å]")
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
    axes[0].scatter(*embedding_sim.T, s=4, alpha=0.5, label="simulated")
    axes[0].scatter(*embedding_exp.T, s=4, alpha=0.5, label="experimental")
    axes[0].legend()
    axes[0].set_title(f"MMD² = {mmd2:.4g}, p = {mmd_pvalue:.3g}")
    sc = axes[1].scatter(*embedding_exp.T, s=4, c=width_exp, cmap="magma")
    fig.colorbar(sc, ax=axes[1], label="posterior σ [Å]")
    axes[1].set_title("experimental, coloured by posterior width")
    for ax in axes:
        ax.set_xlabel("UMAP 1")
        ax.set_ylabel("UMAP 2")
    for col in range(k):
        letter = chr(ord("A") + col)
        x, y = embedding_exp[marked[col]]
        for ax in axes:
            ax.annotate(letter, (x, y), fontsize=11, fontweight="bold", ha="center", va="center",
                        bbox={"boxstyle": "circle,pad=0.15", "fc": "white", "alpha": 0.8})  # fmt: skip
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


def _binned_median(ax, x, y, bins, log=False):
    edges = np.geomspace(x.min(), x.max(), bins + 1) if log else np.linspace(x.min(), x.max(), bins + 1)
    which = np.clip(np.digitize(x, edges) - 1, 0, bins - 1)
    centres, medians = [], []
    for b in range(bins):
        if np.any(which == b):
            centres.append(np.sqrt(edges[b] * edges[b + 1]) if log else 0.5 * (edges[b] + edges[b + 1]))
            medians.append(np.median(y[which == b]))
    ax.plot(centres, medians, color="C3", marker="o", label="median")
    ax.legend()


def plot_calibration(levels, coverage, sim: dict, pit, ks_pvalue: float, path) -> None:
    """Held-out simulations: coverage, SBC, accuracy, and posterior width against SNR and view (Fig. 2B/C)."""
    fig, axes = plt.subplots(2, 3, figsize=(15, 8.5))
    ax = axes[0, 0]
    ax.plot([0, 1], [0, 1], color="grey", ls="--")
    ax.plot(levels, coverage, marker="o")
    ax.set_xlabel("nominal credibility")
    ax.set_ylabel("empirical coverage")
    ax.set_title("expected coverage")
    ax = axes[0, 1]
    bins = 20
    counts, _, _ = ax.hist(pit, bins=bins, range=(0, 1), color="C0")
    expected = len(pit) / bins
    band = 2.58 * np.sqrt(expected * (1 - 1 / bins))  # 99 % band of a uniform histogram's counts
    ax.axhspan(expected - band, expected + band, color="grey", alpha=0.3)
    ax.set_xlabel("SBC rank / (L + 1)")
    ax.set_ylabel("simulations")
    ax.set_title(f"SBC ranks, KS p = {ks_pvalue:.3g}")
    ax = axes[0, 2]
    ax.errorbar(sim["theta_true"], sim["mean"], yerr=sim["std"], fmt=".", alpha=0.3)
    lims = [sim["theta_true"].min(), sim["theta_true"].max()]
    ax.plot(lims, lims, color="k")
    ax.set_xlabel("true θ [Å]")
    ax.set_ylabel("posterior mean ± σ [Å]")
    ax = axes[1, 0]
    ax.scatter(sim["snr"], sim["std"], s=4, alpha=0.4)
    _binned_median(ax, sim["snr"], sim["std"], 8, log=True)
    ax.set_xscale("log")
    ax.set_xlabel("SNR")
    ax.set_ylabel("posterior σ [Å]")
    if "view_angle_deg" in sim:
        for ax, values, label in (
            (axes[1, 1], sim["std"], "posterior σ [Å]"),
            (axes[1, 2], np.abs(sim["mean"] - sim["theta_true"]), "|mean − truth| [Å]"),
        ):
            ax.scatter(sim["view_angle_deg"], values, s=4, alpha=0.4)
            _binned_median(ax, sim["view_angle_deg"], values, 9)
            ax.set_xlabel("angle between beam and direction of motion [°]")
            ax.set_ylabel(label)
    _save(fig, path)


def plot_examples(images, post: dict, indices, path) -> None:
    """Example particles (preprocessed; ``images[k]`` is particle ``indices[k]``) above their posterior samples."""
    n = len(indices)
    fig, axes = plt.subplots(2, n, figsize=(2.4 * n, 5), squeeze=False)
    for col, i in enumerate(indices):
        axes[0, col].imshow(images[col], cmap="gray")
        axes[0, col].set_axis_off()
        axes[0, col].set_title(f"particle {i + 1}")
        axes[1, col].hist(post["samples"][i], bins=30, color="C0")
        axes[1, col].set_xlabel("θ [Å]")
        axes[1, col].set_yticks([])
    _save(fig, path)


def gathered_images(stack_paths: list, shard_particles, indices) -> np.ndarray:
    """Images at dataset-wide ``indices`` from the per-shard preprocessed stacks (shards in order)."""
    offsets = np.concatenate([[0], np.cumsum(shard_particles)])
    images = []
    for i in indices:
        shard = int(np.searchsorted(offsets, i, side="right") - 1)
        with mrcfile.mmap(stack_paths[shard], mode="r", permissive=True) as mrc:
            images.append(np.array(mrc.data[i - offsets[shard]], dtype=np.float32))
    return np.stack(images)
