"""Bring experimental particles onto the training grid: resample, crop, whiten, normalize.

Per optics group: Fourier crop (or pad) to the training pixel size, centre
crop (or pad) to the training box, whitening by the radial noise power
spectrum measured outside a circular mask, and per-image normalization to
zero mean and unit variance, as the simulator normalizes its images.
Streaming: memory is bounded by one chunk of images, and the output stack is
written with plain sequential writes.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import mrcfile
import numpy as np
import pandas as pd
import torch

from cryoflow.chunks import chunks
from cryoflow.errors import InputError
from cryoflow.io import starindex
from cryoflow.io.fileio import atomic_path
from cryoflow.io.particles import IMAGE_NAME, ParticleSource
from cryoflow.logs import Progress
from cryoflow.physics import whitening
from cryoflow.physics.boxsize import MAX_RESAMPLED_PX, resampled_box_px

log = logging.getLogger(__name__)


PIXEL_TOLERANCE = 1e-3  # resampled pixel sizes land within 0.1 % of the training pixel size


def resampling_plan(box_in: int, pixel_in_A: float, pixel_out_A: float) -> tuple[int, int]:
    """(padded box M ≥ box_in, cropped box N', even) with M · p_in / N' within 0.1 % of ``pixel_out_A``.

    Fourier cropping an M-pixel image to N' pixels gives pixels of M · p_in / N' exactly; padding in real
    space first frees M from the particle box, so the training pixel size is met however the two pixel
    sizes relate (0.89 Å × 30 px → 16 px would give 1.669 Å for 1.78; padded to 32 px it gives 1.78).
    """
    ratio = pixel_out_A / pixel_in_A
    n_out = resampled_box_px(box_in, pixel_in_A, pixel_out_A)
    if n_out > MAX_RESAMPLED_PX:  # before any allocation: a pixel size off by orders of magnitude
        raise InputError(
            f"resampling a {box_in} px particle of {pixel_in_A:g} Å pixels to the training pixel size "
            f"{pixel_out_A:g} Å needs {n_out} × {n_out} pixels per image (over {MAX_RESAMPLED_PX}): check "
            "image.pixel_size_A and the particles' pixel size (the STAR file's, or datasets.<name>.pixel_size_A)"
        )
    while True:
        padded = int(round(n_out * ratio))
        if padded >= box_in and abs(padded / n_out - ratio) <= PIXEL_TOLERANCE * ratio:
            return padded, n_out
        n_out += 2  # the rounding error shrinks as 1 / n_out: found by n_out · ratio ≈ 500 at the latest


def pad_with_edge_mean(images: np.ndarray, box: int) -> np.ndarray:
    """Centre (n, N, N) images in (n, box, box), the new border filled with each image's edge mean."""
    n = images.shape[-1]
    if n == box:
        return images
    edge = np.concatenate([images[..., 0, :], images[..., -1, :], images[..., :, 0], images[..., :, -1]], axis=-1)
    out = np.broadcast_to(edge.mean(axis=-1)[..., None, None], images.shape[:-2] + (box, box)).astype(np.float32)
    start = box // 2 - n // 2
    out[..., start : start + n, start : start + n] = images
    return out


def fourier_crop(images: np.ndarray, pixel_in_A: float, pixel_out_A: float) -> tuple[np.ndarray, float]:
    """Resample (n, N, N) images to ``pixel_out_A``: pad in real space, then crop (or zero-pad) the spectrum.

    ``resampling_plan`` picks the padded box M and the new box N'; the new pixel size M·p_in/N' (within
    0.1 % of ``pixel_out_A``) is returned with the images. Every spatial frequency both grids share is
    copied from the half (rfft) spectrum, the rest is dropped or zero, and values are scaled by (N'/M)²
    so that pixel values keep their meaning (a band-limited image keeps its values at shared points).
    Single precision, in torch (threaded).
    """
    padded, n_out = resampling_plan(images.shape[-1], pixel_in_A, pixel_out_A)
    images = pad_with_edge_mean(np.asarray(images, dtype=np.float32), padded)
    if n_out == padded:
        return images, pixel_in_A
    spectrum = resize_spectrum(torch.fft.rfft2(torch.as_tensor(images)), (padded, padded), (n_out, n_out))
    out = torch.fft.irfft2(spectrum, s=(n_out, n_out)) * (n_out / padded) ** 2
    return out.numpy(), padded * pixel_in_A / n_out


def resize_spectrum(spectrum: torch.Tensor, shape_in: tuple[int, int], shape_out: tuple[int, int]) -> torch.Tensor:
    """An rfft2 spectrum (…, ny, nx//2+1) of a (ny, nx) grid on a (my, mx) grid: every frequency both grids
    share is copied, the others are dropped (crop) or zero (pad)."""
    (ny, nx), (my, mx) = shape_in, shape_out
    rows_out = np.rint(np.fft.fftfreq(my) * my).astype(int)  # frequency of each output row
    rows_in = set(np.rint(np.fft.fftfreq(ny) * ny).astype(int).tolist())
    shared = np.array([k in rows_in for k in rows_out])
    columns = min(nx, mx) // 2 + 1
    new = torch.zeros(spectrum.shape[:-2] + (my, mx // 2 + 1), dtype=spectrum.dtype)
    source_rows = torch.as_tensor(rows_out[shared] % ny)
    new[..., torch.as_tensor(np.flatnonzero(shared)), :columns] = spectrum[..., source_rows, :columns]
    return new


def resampled_pixel_A(box_in: int, pixel_in_A: float, pixel_out_A: float) -> float:
    """The pixel size ``fourier_crop`` lands on (within 0.1 % of ``pixel_out_A``)."""
    padded, n_out = resampling_plan(box_in, pixel_in_A, pixel_out_A)
    return padded * pixel_in_A / n_out


def crop_or_pad(images: np.ndarray, box: int) -> np.ndarray:
    """Centre crop or zero-pad (n, N, N) images to (n, box, box); pixel N//2 stays the centre."""
    n = images.shape[-1]
    if n == box:
        return images
    out = np.zeros(images.shape[:-2] + (box, box), dtype=images.dtype)
    src = slice(max(0, n // 2 - box // 2), max(0, n // 2 - box // 2) + min(n, box))
    dst = slice(max(0, box // 2 - n // 2), max(0, box // 2 - n // 2) + min(n, box))
    out[..., dst, dst] = images[..., src, src]
    return out


def to_training_grid(images: np.ndarray, pixel_in_A: float, pixel_out_A: float, box: int) -> np.ndarray:
    """Fourier crop to the training pixel size, then centre crop/pad to the training box."""
    resampled, _ = fourier_crop(images, pixel_in_A, pixel_out_A)
    return crop_or_pad(resampled, box)


# ------------------------------------------------- noise spectra of a dataset
def estimate_noise_spectra(
    source: ParticleSource,
    box_px: int,
    pixel_size_A: float,
    mask_radius_A: float,
    noise_images: int = 1000,
    chunk: int = 512,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Radial noise power on the training grid per optics group, from a seeded random subset of each group."""
    picked = starindex.noise_rows(list(source.group), noise_images, seed)  # as the DAG's inputs are chosen
    mask_radius_px = mask_radius_A / pixel_size_A
    spectra = {}
    for group in source.groups():
        rows = source.group_rows(group)
        pixel, box_in = source.pixel_size_A[rows[0]], source.box(rows[0])
        padded, n_out = resampling_plan(box_in, pixel, pixel_size_A)
        log.info(
            "optics group %s: %d particles, %d px at %.4g Å → padded to %d px → Fourier box %d at %.5g Å → box %d",
            group,
            len(rows),
            box_in,
            pixel,
            padded,
            n_out,
            padded * pixel / n_out,
            box_px,
        )
        pick = np.asarray(picked[str(group)], dtype=np.int64)
        observed, used = 0.0, 0
        for part in np.array_split(pick, max(1, int(np.ceil(len(pick) / chunk)))):
            raw = source.read(part)
            keep = ~blank_images(raw)  # a constant image holds no noise to measure
            if keep.any():
                images = to_training_grid(raw[keep], pixel, pixel_size_A, box_px)
                observed = observed + whitening.background_power(images, mask_radius_px) * keep.sum()
                used += int(keep.sum())
        if used == 0:
            raise InputError(
                f"{source.star_path}: optics group {group}: every image measured for the noise "
                "spectrum is blank (constant pixels)"
            )
        if used < len(pick):
            log.warning(
                "optics group %s: %d of %d images picked for the noise spectrum are blank (constant); left out",
                group,
                len(pick) - used,
                len(pick),
            )
        spectra[str(group)] = whitening.correct_mask_leakage(np.asarray(observed) / used, box_px, mask_radius_px)
        log.info("optics group %s: noise spectrum from %d particles", group, used)
    return spectra


def blank_images(images: np.ndarray) -> np.ndarray:
    """True for images whose pixels are all equal (empty extractions, zero-filled stacks)."""
    flat = images.reshape(len(images), -1)
    return np.all(flat == flat[:, :1], axis=1)


def write_noise_spectra(path, spectra: dict, box_px: int, pixel_size_A: float) -> None:
    """TSV: optics_group, radius_px, frequency_per_A, noise_power (the training grid's radial spectrum)."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t")
        writer.writerow(["optics_group", "radius_px", "frequency_per_A", "noise_power"])
        for group, power in spectra.items():
            for radius, value in enumerate(power):
                writer.writerow([group, radius, f"{radius / (box_px * pixel_size_A):.6f}", f"{value:.8g}"])


def read_noise_spectra(path) -> dict[str, np.ndarray]:
    """Per optics group radial noise power from ``write_noise_spectra``'s TSV."""
    table = pd.read_csv(path, sep="\t", dtype={"optics_group": str})
    missing = {"optics_group", "radius_px", "noise_power"} - set(table.columns)
    if missing:
        raise InputError(f"{path}: column(s) {sorted(missing)} missing")
    return {
        group: part.sort_values("radius_px")["noise_power"].to_numpy(float)
        for group, part in table.groupby("optics_group", sort=False)
    }


class StackWriter:
    """Write an MRC image stack sequentially, keeping header statistics as it goes.

    The file is created under a temporary name with its header, filled by
    plain writes (no memory map, so written pages never count against the
    process), and renamed onto ``path`` only when ``close`` succeeds.
    """

    def __init__(self, tmp_path: Path, n_images: int, box: int, pixel_size_A: float, dtype=np.float32):
        self.path, self.n_images, self.box, self.dtype = Path(tmp_path), n_images, box, np.dtype(dtype)
        with mrcfile.new(self.path, overwrite=True) as mrc:
            mrc.set_data(np.zeros((1, box, box), self.dtype))  # sets the MRC mode of ``dtype``
            mrc.set_image_stack()  # ispg 0, mz 1: the z cell edge is one pixel
            mrc.voxel_size = pixel_size_A
            mrc.header.nz = n_images
            self.offset = 1024 + int(mrc.header.nsymbt)
        self.handle = open(self.path, "r+b")
        self.handle.truncate(self.offset)
        self.handle.seek(self.offset)
        self.written = 0
        self.minimum, self.maximum, self.total, self.total_sq = np.inf, -np.inf, 0.0, 0.0

    def write(self, images: np.ndarray):
        images = np.ascontiguousarray(images, dtype=self.dtype)
        self.handle.write(images.tobytes())
        self.written += len(images)
        if len(images):
            self.minimum = min(self.minimum, float(images.min()))
            self.maximum = max(self.maximum, float(images.max()))
            self.total += float(images.sum(dtype=np.float64))
            self.total_sq += float(np.square(images, dtype=np.float64).sum())

    def close(self):
        self.handle.close()
        if self.written != self.n_images:
            raise RuntimeError(f"{self.path}: {self.written} images written, {self.n_images} expected")
        pixels = max(1, self.written * self.box * self.box)
        with mrcfile.mmap(self.path, mode="r+") as mrc:
            mean = self.total / pixels
            mrc.header.dmin, mrc.header.dmax = (self.minimum, self.maximum) if self.written else (0.0, 0.0)
            mrc.header.dmean = mean
            mrc.header.rms = np.sqrt(max(self.total_sq / pixels - mean**2, 0.0))


def training_grid_images(
    source: ParticleSource,
    rows,
    box_px: int,
    pixel_size_A: float,
    noise_spectra: dict | None = None,
    blank: np.ndarray | None = None,
) -> np.ndarray:
    """Particles ``rows`` on the training grid: resampled per optics group, whitened (unless None), normalized.

    ``blank``, an array of len(rows) when given, is set True for the images whose pixels were all equal.
    """
    rows = np.asarray(rows, dtype=np.int64)
    out = np.empty((len(rows), box_px, box_px), np.float32)
    for group in np.unique(source.group[rows]):
        where = np.flatnonzero(source.group[rows] == group)
        pixel = source.pixel_size_A[rows[where[0]]]
        raw = source.read(rows[where])
        if blank is not None:
            blank[where] = blank_images(raw)
        images = to_training_grid(raw, pixel, pixel_size_A, box_px)
        if noise_spectra is not None:
            if str(group) not in noise_spectra:
                raise InputError(f"noise spectra: none for optics group {group} (rerun rule particle_noise)")
            images = whitening.whiten(images, noise_spectra[str(group)])
        out[where] = whitening.normalize(images)
    return out


def preprocess(
    source: ParticleSource,
    output_mrcs: str | Path,
    box_px: int,
    pixel_size_A: float,
    noise_spectra: dict[str, np.ndarray] | None = None,
    rows: np.ndarray | None = None,
    chunk: int = 512,
    label: str = "preprocess",
) -> np.ndarray:
    """Write ``rows`` of ``source`` (all by default) onto the training grid as a float32 MRC stack; returns
    which images (n,) were blank (constant).

    ``noise_spectra`` (per optics group) whitens; None skips whitening. Memory
    is bounded by ``chunk`` images; the output appears only when complete.
    Returns, per particle written, whether its image was blank (all pixels equal).
    """
    rows = np.arange(len(source)) if rows is None else np.asarray(rows, dtype=np.int64)
    progress = Progress(len(rows), label, unit="particles")
    # the pixel size the header states: what resampling lands on (optics groups differ by < 0.1 %)
    firsts = [source.group_rows(group)[0] for group in np.unique(source.group[rows])]
    realized = [resampled_pixel_A(source.box(i), source.pixel_size_A[i], pixel_size_A) for i in firsts]
    blank = np.zeros(len(rows), bool)
    with atomic_path(output_mrcs) as tmp:
        writer = StackWriter(tmp, len(rows), box_px, float(np.mean(realized)))
        try:
            for piece in chunks(len(rows), chunk):
                part = rows[piece]
                images = training_grid_images(source, part, box_px, pixel_size_A, noise_spectra, blank[piece])
                writer.write(images)
                progress.update(len(part))
        finally:
            writer.handle.close()
        writer.close()
    if blank.any():
        first = int(rows[np.flatnonzero(blank)[0]])
        log.warning(
            "%s: %d blank (constant) images, the first particle %d (%s): they hold no signal",
            source.star_path,
            blank.sum(),
            source.first_row + first + 1,
            source.table[IMAGE_NAME].iloc[first],
        )
    return blank
