"""Report figures (matplotlib, Agg backend) for the workflow's HTML report."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
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


def plot_posteriors(post: dict, theta_range_A, path, truth=None) -> None:
    """Histogram of posterior means, 2-D histogram of samples per particle, width vs mean."""
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
    axes[2].scatter(post["mean"], post["std"], s=4, alpha=0.5)
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


def plot_calibration(levels, coverage, sim: dict, path) -> None:
    """Nominal vs empirical coverage, posterior mean vs truth, width vs SNR (held-out simulations)."""
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    axes[0].plot([0, 1], [0, 1], color="grey", ls="--")
    axes[0].plot(levels, coverage, marker="o")
    axes[0].set_xlabel("nominal credibility")
    axes[0].set_ylabel("empirical coverage")
    axes[1].errorbar(sim["theta_true"], sim["mean"], yerr=sim["std"], fmt=".", alpha=0.3)
    lims = [sim["theta_true"].min(), sim["theta_true"].max()]
    axes[1].plot(lims, lims, color="k")
    axes[1].set_xlabel("true θ [Å]")
    axes[1].set_ylabel("posterior mean ± σ [Å]")
    axes[2].scatter(sim["snr"], sim["std"], s=4, alpha=0.5)
    axes[2].set_xscale("log")
    axes[2].set_xlabel("SNR")
    axes[2].set_ylabel("posterior σ [Å]")
    _save(fig, path)


def plot_examples(images, post: dict, indices, path) -> None:
    """Example particles (preprocessed) above their posterior sample histograms."""
    n = len(indices)
    fig, axes = plt.subplots(2, n, figsize=(2.4 * n, 5), squeeze=False)
    for col, i in enumerate(indices):
        axes[0, col].imshow(images[i], cmap="gray")
        axes[0, col].set_axis_off()
        axes[0, col].set_title(f"particle {i + 1}")
        axes[1, col].hist(post["samples"][i], bins=30, color="C0")
        axes[1, col].set_xlabel("θ [Å]")
        axes[1, col].set_yticks([])
    _save(fig, path)
