"""The population p(θ) across particles, deconvolved from their posteriors, and per-state particle subsets.

A histogram of posterior means is the population smeared by every particle's uncertainty. Under the
uniform training prior each particle's posterior is its likelihood up to a constant, so the population
is the mixture weight of each θ bin that best explains them: expectation-maximization over bins,

    r_ib ∝ w_b L_i(b),    w_b ← (1/n) Σ_i r_ib,    then w smoothed over neighbouring bins (EMS),

with L_i(b) the share of particle i's posterior samples in bin b (plus a small floor, so that a bin no
sample of a particle reached is unlikely, not impossible). Bootstrap resamples of the particles give a
band; −ln p(θ) is the free-energy profile in units of kT.
"""

from __future__ import annotations

from typing import TypedDict

import numpy as np


def bin_likelihoods(samples: np.ndarray, edges: np.ndarray, floor: float = 0.1) -> np.ndarray:
    """(n, B) likelihood of each bin per particle from its posterior samples (n, S); rows sum to 1.

    ``floor`` is in units of one sample: a bin no sample reached gets floor / S before normalizing.
    """
    n, s = samples.shape
    index = np.clip(np.searchsorted(edges, samples, side="right") - 1, 0, len(edges) - 2)
    counts = np.zeros((n, len(edges) - 1))
    np.add.at(counts, (np.repeat(np.arange(n), s), index.ravel()), 1.0)
    counts += floor
    return counts / counts.sum(axis=1, keepdims=True)


def smooth(weights: np.ndarray) -> np.ndarray:
    """One pass of the (1/4, 1/2, 1/4) kernel, mass kept at the edges."""
    padded = np.pad(weights, 1, mode="edge")
    out = 0.25 * padded[:-2] + 0.5 * padded[1:-1] + 0.25 * padded[2:]
    return out / out.sum()


def em_weights(likelihood: np.ndarray, iterations: int = 1000, tolerance: float = 1e-7) -> np.ndarray:
    """Mixture weights (B,) over bins: EM for Σ_i log Σ_b w_b L_ib from the uniform, each step smoothed
    (EMS: the unsmoothed maximum-likelihood weights are spikes on a fine grid, the smoothed ones a
    density whose width is set by the data, not by the grid)."""
    weights = np.full(likelihood.shape[1], 1.0 / likelihood.shape[1])
    for _ in range(iterations):
        responsibility = likelihood * weights
        responsibility /= responsibility.sum(axis=1, keepdims=True)
        new = smooth(responsibility.mean(axis=0))
        if np.max(np.abs(new - weights)) < tolerance:
            return new
        weights = new
    return weights


class PopulationEstimate(TypedDict):
    """A population over a 1-D θ, per bin: centres and edges (Å), weights, density (per Å) with its 5–95 %
    bootstrap band, and the free energy in kT (its minimum at 0)."""

    theta_A: np.ndarray
    edges_A: np.ndarray
    weights: np.ndarray
    density: np.ndarray
    low: np.ndarray
    high: np.ndarray
    free_energy_kT: np.ndarray


class State(TypedDict):
    """A state: a basin of the population, its θ interval (Å), weight and mean θ."""

    theta_low_A: float
    theta_high_A: float
    weight: float
    theta_mean_A: float


def estimate(
    samples: np.ndarray, theta_range_A, n_bins: int = 36, n_bootstrap: int = 100, seed: int = 0
) -> PopulationEstimate:
    """Population over a 1-D θ: bin centres, density p(θ) (per Å), its 5–95 % bootstrap band, free energy.

    ``samples``: (n, S) posterior samples per particle. Returns arrays ``theta_A``, ``density``, ``low``,
    ``high``, ``free_energy_kT`` (−ln p, its minimum at 0; inf where p = 0) and ``weights`` (per bin).
    """
    low_A, high_A = float(theta_range_A[0]), float(theta_range_A[1])
    edges = np.linspace(low_A, high_A, n_bins + 1)
    width = edges[1] - edges[0]
    likelihood = bin_likelihoods(np.asarray(samples, dtype=float), edges)
    weights = em_weights(likelihood)
    rng = np.random.default_rng(seed)
    boot = np.stack(
        [em_weights(likelihood[rng.integers(0, len(likelihood), len(likelihood))]) for _ in range(n_bootstrap)]
    )
    density = weights / width
    with np.errstate(divide="ignore"):
        energy = -np.log(density)
    return PopulationEstimate(
        theta_A=0.5 * (edges[:-1] + edges[1:]),
        edges_A=edges,
        weights=weights,
        density=density,
        low=np.percentile(boot, 5, axis=0) / width,
        high=np.percentile(boot, 95, axis=0) / width,
        free_energy_kT=energy - np.min(energy),
    )


def modes(weights: np.ndarray, edges: np.ndarray, min_weight: float = 0.05) -> list[State]:
    """States as the basins of the estimated population: split at its local minima (smoothed over three
    bins), merge basins lighter than ``min_weight`` into their neighbour. Each state: θ interval,
    weight, and mean θ."""
    smooth = np.convolve(np.pad(weights, 1, mode="edge"), np.ones(3) / 3, mode="valid")
    cuts = [i for i in range(1, len(smooth) - 1) if smooth[i] < smooth[i - 1] and smooth[i] <= smooth[i + 1]]
    bounds = [0, *cuts, len(weights)]
    basins = [[bounds[k], bounds[k + 1]] for k in range(len(bounds) - 1)]
    while len(basins) > 1:
        masses = [weights[a:b].sum() for a, b in basins]
        light = int(np.argmin(masses))
        if masses[light] >= min_weight:
            break
        if light == 0:
            neighbour = 1
        elif light == len(basins) - 1:
            neighbour = light - 1
        else:
            left, right = masses[light - 1], masses[light + 1]
            neighbour = light - 1 if left <= right else light + 1
        a, b = sorted((light, neighbour))
        basins[a : b + 1] = [[basins[a][0], basins[b][1]]]
    centres = 0.5 * (edges[:-1] + edges[1:])
    states: list[State] = []
    for a, b in basins:
        mass = float(weights[a:b].sum())
        mean = float(np.sum(weights[a:b] * centres[a:b]) / max(mass, 1e-12))
        states.append(State(theta_low_A=float(edges[a]), theta_high_A=float(edges[b]), weight=mass, theta_mean_A=mean))
    return states


def mass_inside(samples: np.ndarray, low_A: float, high_A: float) -> np.ndarray:
    """Per particle, the share of its posterior samples inside [low, high)."""
    return np.mean((samples >= low_A) & (samples < high_A), axis=1)
