"""Posterior-predictive check: does the simulator make images like these particles?

Comparing particle latents with simulations drawn from the prior mostly asks "does this dataset look
like the prior?" (a 70/30 mixture at low SNR does not). The predictive check asks the question that
matters: for each particle, simulate one image at θ drawn from **its own posterior**, with **its own
CTF** (from its STAR row), through the same preprocessing its image went through (whitened by the
measured noise spectrum, or coloured noise when particles are not whitened), at an SNR matched to its
own; then compare those images with the particles two ways, each by MMD with a permutation p-value:
their latents (what the network sees) and their power spectra (the shape of each image's radial
power over a few frequency shells: what the resolution envelope and the CTF make, which a small
network's latent may hardly register). The check's p-value is the smaller of the two, doubled
(Bonferroni). It also flags particles whose latent lies farther from the predictive images than
predictive images lie from each other (a k-nearest-neighbour distance and its empirical p-value).
When the simulator is right the two sets are draws from one distribution; a wrong bead width,
defocus, contrast or a state outside the ensemble makes them differ (bead width and defocus mostly
in the spectra, contrast and missing states in the latents).

The SNR is matched per particle through an estimator applied alike to particles and to simulations:
the variance outside the simulator's mask is taken as noise, the excess inside as signal; its bias
(signal leaking outside the mask) is removed by a calibration on simulations of known SNR. The noise
spectrum is matched the same way: where signal reaches the background (a large particle in a small
box), the particles' measured spectrum is too high at low frequencies and their whitened noise is not
white, so the predictive noise is coloured such that the same estimator, applied to predictive images,
measures the particles' spectrum; both sets are then whitened by it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from cryoflow.analysis import populations
from cryoflow.physics import simulator as sim_module
from cryoflow.physics.theta import bounds
from cryoflow.physics.whitening import estimate_noise_power, radial_index, whiten


def estimated_snr(images: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per image: (variance inside the mask − variance outside) / variance outside, at least 1e-4."""
    images = np.asarray(images, dtype=np.float64)
    noise = images[:, ~mask].var(axis=1)
    inside = images[:, mask].var(axis=1)
    return np.maximum(inside - noise, 1e-4 * noise) / noise


class PredictiveSimulator:
    """Images of given θ and CTFs, preprocessed as the dataset's particles were.

    ``noise_power``: the dataset's radial noise spectrum on the training grid (one optics group); the
    simulated signal gets noise coloured by it (by a corrected spectrum after ``match_noise_estimate``)
    and, with ``whitened``, the images are whitened by it, as the particles were.
    """

    def __init__(
        self, simulator, noise_power: np.ndarray | None, whitened: bool, noise_mask_radius_px: float | None = None
    ):
        self.sim = simulator
        self.noise_power = None if noise_power is None else np.asarray(noise_power, dtype=float)
        self.whitened = whitened
        self.noise_mask_radius_px = noise_mask_radius_px
        self.mask = simulator.mask.cpu().numpy().astype(bool)
        self.colour: torch.Tensor | None = None
        if self.noise_power is not None:
            self.set_noise_colour(self.noise_power)

    def set_noise_colour(self, power: np.ndarray) -> None:
        """Colour the images' noise by the radial power spectrum ``power`` (its shape; unit variance)."""
        amplitude = np.sqrt(np.maximum(power, 1e-12 * power.max()))[radial_index(self.sim.box)]
        self.colour = torch.as_tensor(amplitude / np.sqrt(np.mean(amplitude**2)), dtype=torch.float32)  # per pixel

    def nuisance(self, n: int, ctf: dict | None, generator) -> dict:
        """The prior's pose, shift, bead width and B-factor, with the particles' CTF where given."""
        nuisance = self.sim.sample_nuisance(n, generator)
        for key, values in (ctf or {}).items():
            nuisance[key] = torch.as_tensor(values, dtype=torch.float32, device=self.sim.device)
        return nuisance

    def raw_images(self, theta, nuisance: dict, snr, generator) -> np.ndarray:
        """Images before whitening and normalization: signal plus noise of the current colour."""
        with torch.no_grad():
            theta = torch.as_tensor(theta, dtype=torch.float32, device=self.sim.device)
            signal = self.sim.noiseless(theta, nuisance)
            noise = torch.randn(signal.shape, generator=generator, device=self.sim.device)
            if self.colour is not None:
                noise = torch.fft.irfft2(torch.fft.rfft2(noise) * self.colour.to(noise.device), s=signal.shape[-2:])
            snr = torch.as_tensor(snr, dtype=torch.float32, device=self.sim.device)
            return sim_module.add_noise(signal, snr, self.sim.mask, noise).cpu().numpy()

    def images(self, theta, nuisance: dict, snr, generator) -> np.ndarray:
        """Normalized images at ``snr`` (per image) for ``theta``, preprocessed like the particles."""
        images = self.raw_images(theta, nuisance, snr, generator)
        if self.whitened and self.noise_power is not None:
            images = whiten(images, self.noise_power)
        return sim_module.normalize(torch.as_tensor(images)).numpy()

    def match_noise_estimate(self, theta, nuisance: dict, snr, generator, iterations: int = 3) -> np.ndarray | None:
        """Colour the noise so that the spectrum estimated from predictive images at the particles' ``theta``
        and ``snr`` (as the particles' was, from the background outside ``noise_mask_radius_px``) equals
        ``noise_power``, the particles' estimate (a fixed-point iteration).

        Signal outside the mask (a large particle in a small box, CTF delocalization at high defocus)
        raises the particles' background power at low frequencies, so ``noise_power`` overstates their
        noise there and their whitened noise is not quite white; predictive images whose noise makes the
        same estimate carry the same bias, so the check compares like with like. Returns the noise
        spectrum used over ``noise_power`` (shape only: mean 1 over frequencies), or None where there is
        no spectrum or no radius to match.
        """
        if self.noise_power is None or self.noise_mask_radius_px is None:
            return None
        floor = 1e-12 * self.noise_power.max()
        target = np.maximum(self.noise_power, floor)
        power = target.copy()
        for _ in range(iterations):
            estimate = estimate_noise_power(self.raw_images(theta, nuisance, snr, generator), self.noise_mask_radius_px)
            power = power * target / np.maximum(estimate, floor)
            power[0] = power[1]  # the mean is not noise
            power /= power[1:].mean() / target[1:].mean()  # keep the overall scale: shape only
            self.set_noise_colour(power)
        ratio = power[1:] / target[1:]
        return ratio / ratio.mean()

    def snr_calibration(self, theta, nuisance: dict, generator, n_levels: int = 25):
        """(true, estimated) SNRs of simulations at known, log-spaced SNRs from 0.003 to 30."""
        n = len(theta)
        levels = np.exp(np.linspace(np.log(3e-3), np.log(30.0), n_levels))
        true = np.repeat(levels, int(np.ceil(n / n_levels)))[:n]
        true = true[np.random.default_rng(0).permutation(n)]
        estimate = estimated_snr(self.images(theta, nuisance, true, generator), self.mask)
        return true, estimate


def calibrated_snr(estimates: np.ndarray, calibration: tuple) -> np.ndarray:
    """The true SNR of each estimate, from the median estimate at each calibration level (monotone,
    interpolated in log space): the estimator's bias removed, each particle kept at its own SNR."""
    true, estimate = (np.asarray(v, dtype=float) for v in calibration)
    levels = np.unique(true)
    medians = np.maximum.accumulate([np.median(estimate[true == level]) for level in levels])
    return np.exp(np.interp(np.log(np.asarray(estimates, dtype=float)), np.log(medians + 1e-12), np.log(levels)))


def population_draws(samples: np.ndarray, theta_range_A, seed: int, n_bins: int = 144) -> np.ndarray:
    """One θ per particle from its posterior reweighted by the population across particles.

    A particle's posterior under the uniform training prior is its likelihood; drawing θ from it alone
    makes predictive images as spread as the posteriors, wider than a population that is narrower than
    the prior (a dataset of two sharp states would then fail a check it should pass). Weighting each
    posterior sample by the deconvolved population p̂(θ) (``cryoflow.analysis.populations``) draws from
    p(θ | image, p̂) instead. ``samples``: (n, S) or, for a 2-D θ, (n, S, 2) (weights: the product of
    the two marginal populations). The bins are fine (144 over the range): a coarse population blurs
    narrow states, and the predictive images with them.
    """
    samples = np.asarray(samples, dtype=float)
    ranges = bounds(theta_range_A)
    per_coordinate = [samples] if samples.ndim == 2 else [samples[..., d] for d in range(samples.shape[-1])]
    weights = np.ones(samples.shape[:2])
    for values, (low, high) in zip(per_coordinate, ranges):
        # the population's weights alone: no bootstrap band is needed here
        edges = np.linspace(low, high, n_bins + 1)
        population = populations.em_weights(populations.bin_likelihoods(values, edges))
        index = np.clip(np.searchsorted(edges, values, side="right") - 1, 0, n_bins - 1)
        weights = weights * (population[index] + 1e-12)
    weights /= weights.sum(axis=1, keepdims=True)
    rng = np.random.default_rng(seed)
    pick = (weights.cumsum(axis=1) < rng.random((len(weights), 1))).sum(axis=1)
    return samples[np.arange(len(samples)), np.minimum(pick, samples.shape[1] - 1)]


SPECTRAL_SHELLS = 16


def spectral_profiles(images: np.ndarray, n_shells: int = SPECTRAL_SHELLS) -> np.ndarray:
    """Per image, the log mean power |F|² in ``n_shells`` equal-width frequency shells from the first
    Fourier pixel to Nyquist, less its mean over the shells: the spectrum's shape, free of the image's
    scale. (n, box, box) -> (n, n_shells)."""
    images = np.asarray(images, dtype=np.float64)
    box = images.shape[-1]
    radius = radial_index(box)
    shell = np.floor((radius - 1) * n_shells / (box // 2)).astype(np.int64)  # radius 1..box/2 -> 0..n_shells-1
    inside = (radius >= 1) & (radius <= box // 2)
    counts = np.bincount(shell[inside], minlength=n_shells)
    power = np.abs(np.fft.rfft2(images)) ** 2
    sums = np.stack([np.bincount(shell[inside], weights=row[inside], minlength=n_shells) for row in power])
    profiles = np.log(sums / counts + 1e-30)
    return profiles - profiles.mean(axis=1, keepdims=True)


def spectral_test(particles: np.ndarray, predicted: np.ndarray, n_permutations: int, seed: int) -> dict:
    """MMD test of the particles' spectral profiles against the predictive images', each shell scaled by
    the pooled standard deviation (so that no shell's spread dominates the kernel)."""
    from cryoflow.analysis.diagnostics import mmd_test

    x, y = spectral_profiles(particles), spectral_profiles(predicted)
    pooled = np.concatenate([x, y])
    mean, scale = pooled.mean(axis=0), pooled.std(axis=0) + 1e-12
    return mmd_test((x - mean) / scale, (y - mean) / scale, n_permutations, seed, max_points=len(pooled))


def adjusted_pvalues(*pvalues: float) -> list[float]:
    """Bonferroni: each p-value times the number of tests, at most 1."""
    return [float(min(1.0, len(pvalues) * p)) for p in pvalues]


def combined_pvalue(*pvalues: float) -> float:
    """The p-value of "at least one test rejects": the smallest Bonferroni-adjusted one."""
    return min(adjusted_pvalues(*pvalues))


def knn_distance(points: np.ndarray, reference: np.ndarray, k: int, exclude_self: bool = False) -> np.ndarray:
    """Mean distance of each point to its k nearest neighbours in ``reference``."""
    d = np.sqrt(
        np.maximum((points**2).sum(1)[:, None] + (reference**2).sum(1)[None, :] - 2.0 * points @ reference.T, 0.0)
    )
    if exclude_self:
        np.fill_diagonal(d, np.inf)
    return np.sort(d, axis=1)[:, :k].mean(axis=1)


class LatentReference:
    """A reference set of latents and the null distribution of its leave-one-out k-NN distances: the p-value
    of other latents' k-NN distance among it (small: unlike anything in the reference)."""

    def __init__(self, latents: np.ndarray, k: int = 10):
        self.latents = np.asarray(latents, np.float64)
        self.k = min(k, len(self.latents) - 1)
        self.null = np.sort(knn_distance(self.latents, self.latents, self.k, exclude_self=True))

    def pvalues(self, latents: np.ndarray) -> np.ndarray:
        observed = knn_distance(np.asarray(latents, np.float64), self.latents, self.k)
        exceed = len(self.null) - np.searchsorted(self.null, observed, side="left")
        return (exceed + 1) / (len(self.null) + 1)


def atypicality_pvalues(particles: np.ndarray, predicted: np.ndarray, k: int = 10) -> np.ndarray:
    """Per particle, the share of predictive images at least as far from the predictive set (k-NN distance,
    leave-one-out) as the particle is: small for a particle the simulator does not explain."""
    return LatentReference(predicted, k).pvalues(particles)


ALPHA = 0.01


def verdict(latent: dict, spectrum: dict, n_atypical: int, n: int) -> str:
    """Plain words on a predictive check's two MMD tests (latents, spectra) and its atypical particles."""
    latent_adjusted, spectrum_adjusted = adjusted_pvalues(latent["pvalue"], spectrum["pvalue"])
    pvalue = min(latent_adjusted, spectrum_adjusted)
    tests = f"p = {pvalue:.3g}; latents p = {latent['pvalue']:.3g}, power spectra p = {spectrum['pvalue']:.3g}"
    if pvalue >= ALPHA:
        text = (
            f"Particles and their posterior-predictive simulations are indistinguishable ({tests}): the "
            "simulator, at each particle's own CTF and posterior θ, explains these images."
        )
    else:
        text = (
            f"Particles differ from their posterior-predictive simulations ({tests}): something the simulator "
            "does differently from the microscope is not absorbed by θ."
        )
        if spectrum_adjusted < ALPHA:
            text += (
                " Their power spectra differ: the resolution envelope (bead width, B-factor prior) or the CTF "
                "(defocus values that do not match the images) is wrong."
            )
        if latent_adjusted < ALPHA:
            text += (
                " Their latents differ: in tests this catches particles of opposite contrast (set the dataset's "
                "contrast), states outside the template ensemble (widen the ensemble), and large envelope or "
                "defocus errors."
            )
    expected = ALPHA * n
    return text + (f" {n_atypical} of {n} particles are atypical at p < {ALPHA} ({expected:.0f} expected by chance).")


@dataclasses.dataclass(frozen=True)
class PredictiveResult:
    """A posterior-predictive check: the two MMD tests (latents, power spectra), their combined p-value, and
    per particle its atypicality p-value, SNR, drawn θ and predictive latent."""

    mmd2: float
    latent_pvalue: float
    bandwidth: float
    spectrum_mmd2: float
    spectrum_pvalue: float
    pvalue: float
    atypical_pvalues: np.ndarray  # (n,)
    n_atypical: int
    snr: np.ndarray  # (n,)
    theta_A: np.ndarray  # (n,) or (n, 2)
    predicted_latent: np.ndarray  # (n, latent)
    noise_estimate_bias: dict[str, float]  # per optics group; see PredictiveSimulator.match_noise_estimate
    verdict: str

    def summary(self, n_particles: int, ctf_from_star: bool) -> dict[str, Any]:
        """The ``ppc_*`` entries of ``predictive.json`` (and of the dataset's report summary)."""
        return {
            "ppc_mmd2": self.mmd2,
            "ppc_pvalue": self.pvalue,
            "ppc_latent_pvalue": self.latent_pvalue,
            "ppc_spectrum_mmd2": self.spectrum_mmd2,
            "ppc_spectrum_pvalue": self.spectrum_pvalue,
            "ppc_bandwidth": self.bandwidth,
            "ppc_n_particles": int(n_particles),
            "ppc_n_atypical": self.n_atypical,
            "ppc_verdict": self.verdict,
            "ppc_ctf_from_star": ctf_from_star,
            "ppc_noise_estimate_bias": self.noise_estimate_bias,
            "ppc_median_snr": float(np.median(self.snr)),
        }


def predictive_images(
    predictive_by_group: dict,
    images: np.ndarray,
    groups: np.ndarray,
    theta: np.ndarray,
    ctf: dict | None,
    seed: int,
) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    """One predictive image per particle at its drawn θ, its own CTF (None: the prior's) and its measured
    SNR, with the noise matched per optics group; returns (images, SNRs, noise-estimate bias per group)."""
    generator = torch.Generator().manual_seed(seed)
    predicted = np.empty_like(images)
    snr = np.empty(len(images))
    noise_bias = {}
    for group in np.unique(groups):
        rows = np.flatnonzero(groups == group)
        pps = predictive_by_group[group]
        part = None if ctf is None else {key: np.asarray(values)[rows] for key, values in ctf.items()}
        calibration = pps.snr_calibration(theta[rows], pps.nuisance(len(rows), part, generator), generator)
        snr[rows] = calibrated_snr(estimated_snr(images[rows], pps.mask), calibration)
        bias = pps.match_noise_estimate(theta[rows], pps.nuisance(len(rows), part, generator), snr[rows], generator)
        if bias is not None:  # the noise changed: match the SNRs again
            noise_bias[group] = float(bias.max() / bias.min())
            calibration = pps.snr_calibration(theta[rows], pps.nuisance(len(rows), part, generator), generator)
            snr[rows] = calibrated_snr(estimated_snr(images[rows], pps.mask), calibration)
        predicted[rows] = pps.images(theta[rows], pps.nuisance(len(rows), part, generator), snr[rows], generator)
    return predicted, snr, noise_bias


def check(
    predictive_by_group: dict,
    images: np.ndarray,
    groups,
    samples: np.ndarray,
    latents: np.ndarray,
    theta_range_A,
    ctf: dict | None,
    n_permutations: int,
    seed: int,
    latent_fn: Callable[[np.ndarray], np.ndarray],
) -> PredictiveResult:
    """The posterior-predictive check of particles ``images`` (preprocessed, the training grid).

    ``predictive_by_group``: a ``PredictiveSimulator`` per optics group label in ``groups``;
    ``samples``/``latents``: the particles' posterior samples and latents; ``ctf``: per-particle CTF
    arrays under the simulator's nuisance names (None: the prior's); ``latent_fn(images) -> latents``
    embeds images with the model. ``noise_estimate_bias``, per optics group, is the largest over the
    smallest ratio of the predictive noise spectrum to the particles' measured one (1 when no signal
    reaches the background; see ``PredictiveSimulator.match_noise_estimate``).
    """
    from cryoflow.analysis.diagnostics import mmd_test

    n = len(images)
    theta = population_draws(samples, theta_range_A, seed)
    groups = np.asarray(groups).astype(str)
    predicted, snr, noise_bias = predictive_images(predictive_by_group, images, groups, theta, ctf, seed)
    predicted_latents = latent_fn(predicted)
    test = mmd_test(predicted_latents, latents, n_permutations, seed, max_points=n)
    spectrum = spectral_test(images, predicted, n_permutations, seed)
    pvalues = atypicality_pvalues(latents, predicted_latents)
    n_atypical = int(np.sum(pvalues < ALPHA))
    return PredictiveResult(
        mmd2=test["mmd2"],
        latent_pvalue=test["pvalue"],
        bandwidth=test["bandwidth"],
        spectrum_mmd2=spectrum["mmd2"],
        spectrum_pvalue=spectrum["pvalue"],
        pvalue=combined_pvalue(test["pvalue"], spectrum["pvalue"]),
        atypical_pvalues=pvalues,
        n_atypical=n_atypical,
        snr=snr,
        theta_A=theta,
        predicted_latent=predicted_latents,
        noise_estimate_bias=noise_bias,
        verdict=verdict(test, spectrum, n_atypical, n),
    )
