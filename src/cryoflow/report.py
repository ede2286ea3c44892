"""Report figures (matplotlib, Agg backend) for the workflow's HTML report."""

from __future__ import annotations

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


def plot_latents(embedding_sim, embedding_exp, width_exp, mmd2: float, mmd_pvalue: float, path) -> None:
    """UMAP of latents: simulated vs experimental, and experimental coloured by posterior width."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
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
