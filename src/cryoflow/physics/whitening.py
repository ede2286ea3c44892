"""Noise power spectra and whitening: radial spectra of images, the background measured outside a mask
(corrected for the mask's leakage), whitening by that spectrum, and per-image normalization.

Pure array functions; ``cryoflow.physics.preprocess`` applies them to a dataset's particles in chunks.
"""

from __future__ import annotations

import numpy as np
import torch
from jaxtyping import Float, Int

from cryoflow.errors import InputError
from cryoflow.physics import simulator


def radial_index(box: int) -> Int[np.ndarray, "box bx"]:
    """Integer radius (in Fourier pixels) of every rfft2 coefficient of a box × box image."""
    fy = np.fft.fftfreq(box) * box
    fx = np.fft.rfftfreq(box) * box
    return np.rint(np.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2)).astype(np.int64)


def radial_power(images: Float[np.ndarray, "n box box"]) -> Float[np.ndarray, " radius"]:
    """Mean power |F|² per integer radius, averaged over images, for (n, box, box) images."""
    box = images.shape[-1]
    power = (np.abs(np.fft.rfft2(images)) ** 2).mean(axis=0)
    radius = radial_index(box)
    return np.bincount(radius.ravel(), power.ravel()) / np.bincount(radius.ravel())


def radial_to_grid(radial: Float[np.ndarray, " radius"], box: int) -> Float[np.ndarray, "box box"]:
    """Full (box, box) fft2 grid of a radial profile indexed by integer radius."""
    fy = np.fft.fftfreq(box) * box
    radius = np.rint(np.sqrt(fy[:, None] ** 2 + fy[None, :] ** 2)).astype(np.int64)
    return radial[np.minimum(radius, len(radial) - 1)]


def masked_power(noise_power: np.ndarray, window: np.ndarray) -> np.ndarray:
    """Expected radial power of ``window · x`` for stationary noise x with radial power ``noise_power``.

    Windowing multiplies auto-correlations in real space, so the expected
    periodogram is FFT(IFFT(|Ŵ|²) · IFFT(S)) / N².
    """
    box = window.shape[-1]
    acf_window = np.fft.ifft2(np.abs(np.fft.fft2(window)) ** 2)
    acf_noise = np.fft.ifft2(radial_to_grid(noise_power, box))
    expected = np.fft.fft2(acf_window * acf_noise).real / box**2
    radius = radial_index(box)
    half = expected[:, : box // 2 + 1]
    return np.bincount(radius.ravel(), half.ravel()) / np.bincount(radius.ravel())


def noise_mask_radius_A(mask_radius_A: float | None, image: dict) -> float:
    """The radius outside which particle backgrounds are measured: ``particles.mask_radius_A``, or 40 %
    of the training box (``image``: ``box_px``, ``pixel_size_A``)."""
    return mask_radius_A or 0.4 * image["box_px"] * image["pixel_size_A"]


def background_power(images: np.ndarray, mask_radius_px: float) -> np.ndarray:
    """Mean radial power of the images' backgrounds: outside the mask, mean-subtracted, disc zeroed.

    The mean is subtracted in real space, so the spectrum's DC term, at index
    (0, 0) of the unshifted transform, measures no offset.
    """
    box = images.shape[-1]
    outside = ~simulator.circular_mask(box, mask_radius_px).numpy()
    if outside.sum() < 0.05 * box * box:
        raise InputError(
            f"particles.mask_radius_A: a mask of radius {mask_radius_px:.1f} px leaves almost no background in the "
            f"{box} px training box"
        )
    background = images - images[:, outside].mean(axis=1)[:, None, None]
    return radial_power(background * outside)


def correct_mask_leakage(observed: np.ndarray, box: int, mask_radius_px: float, iterations: int = 8) -> np.ndarray:
    """Noise power S whose masked expectation matches the observed background power.

    Zeroing the disc blurs the spectrum (the window's transform is convolved
    with it), which biases steep low-frequency power; iterate
    S ← S · observed / expected(S), the expectation computed exactly by
    ``masked_power``.
    """
    window = (~simulator.circular_mask(box, mask_radius_px).numpy()).astype(np.float64)
    estimate = observed / window.mean()
    for _ in range(iterations):
        expected = masked_power(estimate, window)
        estimate = estimate * observed / np.maximum(expected, observed.max() * 1e-12)
    return estimate


def estimate_noise_power(images: np.ndarray, mask_radius_px: float, iterations: int = 8) -> np.ndarray:
    """Radial noise power spectrum of (n, box, box) images from the pixels outside a circular mask."""
    observed = background_power(images, mask_radius_px)
    return correct_mask_leakage(observed, images.shape[-1], mask_radius_px, iterations)


def whiten(
    images: Float[np.ndarray, "*batch box box"], noise_power: Float[np.ndarray, " radius"]
) -> Float[np.ndarray, "*batch box box"]:
    """Divide each image's spectrum by the square root of the radial noise power spectrum (float32, torch)."""
    box = images.shape[-1]
    radius = radial_index(box)
    power = noise_power.copy()
    power[0] = power[1]  # the mean carries no noise estimate; treat it like the lowest frequency
    filt = torch.as_tensor((1.0 / np.sqrt(np.maximum(power, power.max() * 1e-12)))[radius], dtype=torch.float32)
    spectrum = torch.fft.rfft2(torch.as_tensor(np.asarray(images, dtype=np.float32)))
    return torch.fft.irfft2(spectrum * filt, s=(box, box)).numpy()


def normalize(images: Float[np.ndarray, "*batch y x"]) -> Float[np.ndarray, "*batch y x"]:
    """Zero mean, unit standard deviation per image, by the simulator's own ``normalize``."""
    return simulator.normalize(torch.from_numpy(np.asarray(images, dtype=np.float32))).numpy()
