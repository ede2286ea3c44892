"""Experimental particles: RELION STAR + MRC stacks, streamed and preprocessed.

Reading follows RELION: ``_rlnImageName`` is ``idx@path`` with a 1-based
index; pixel sizes come from the optics block (3.1+) or from
``_rlnDetectorPixelSize`` (µm) and ``_rlnMagnification`` (3.0). Stack paths
stay data: they are resolved against the file system, never executed.

Preprocessing brings every particle onto the training grid: Fourier crop (or
pad) to the training pixel size, centre crop (or pad) to the training box,
whitening by the radial noise power spectrum measured outside a circular mask,
and per-image normalization to zero mean and unit variance.
"""

from __future__ import annotations

import logging
import warnings
from collections import OrderedDict
from pathlib import Path

import mrcfile
import numpy as np
import pandas as pd
import starfile
import torch

from cryoflow import simulator
from cryoflow.fileio import InputError, atomic_path
from cryoflow.logs import Progress

log = logging.getLogger(__name__)

IMAGE_NAME = "rlnImageName"


# ---------------------------------------------------------------- STAR files
def read_star(path: str | Path) -> OrderedDict:
    """All data blocks of a STAR file as an ordered dict of DataFrames."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: STAR file not found (config key particles.star)")
    try:
        blocks = starfile.read(path, always_dict=True)
    except Exception as err:
        raise InputError(f"{path}: could not parse STAR file: {err}") from err
    return OrderedDict(
        (name, df if isinstance(df, pd.DataFrame) else pd.DataFrame([df])) for name, df in blocks.items()
    )


def particle_block_name(blocks: OrderedDict, path) -> str:
    """Name of the block holding the particles (``particles``, ``images`` or the only block with image names)."""
    for name in ("particles", "images"):
        if name in blocks and IMAGE_NAME in blocks[name].columns:
            return name
    candidates = [name for name, df in blocks.items() if IMAGE_NAME in df.columns]
    if not candidates:
        raise InputError(f"{path}: no data block has the column _{IMAGE_NAME}")
    return candidates[0]


def particle_table(
    path: str | Path, blocks: OrderedDict | None = None, pixel_size_A: float | None = None
) -> pd.DataFrame:
    """Particles with optics merged in and a resolved ``pixel_size_A`` column (``pixel_size_A`` overrides)."""
    blocks = read_star(path) if blocks is None else blocks
    name = particle_block_name(blocks, path)
    table = blocks[name].copy()
    optics = blocks.get("optics")
    if optics is not None and "rlnOpticsGroup" in table.columns and "rlnOpticsGroup" in optics.columns:
        extra = [c for c in optics.columns if c not in table.columns or c == "rlnOpticsGroup"]
        table = table.merge(optics[extra], on="rlnOpticsGroup", how="left", validate="many_to_one")
    if pixel_size_A:
        pixel = pd.Series(np.full(len(table), float(pixel_size_A)))
    elif "rlnImagePixelSize" in table.columns:
        pixel = table["rlnImagePixelSize"].astype(float)
    elif "rlnPixelSize" in table.columns:
        pixel = table["rlnPixelSize"].astype(float)
    elif {"rlnDetectorPixelSize", "rlnMagnification"} <= set(table.columns):
        pixel = table["rlnDetectorPixelSize"].astype(float) * 1e4 / table["rlnMagnification"].astype(float)
    else:
        raise InputError(
            f"{path}: pixel size not found (_rlnImagePixelSize in optics, or _rlnDetectorPixelSize and "
            "_rlnMagnification); set particles.pixel_size_A"
        )
    table["pixel_size_A"] = pixel.to_numpy()
    return table


def ctf_priors(table: pd.DataFrame, path) -> dict:
    """Prior ranges found in a particle table's CTF and optics columns (RELION names).

    Returns ``defocus_range_A`` (mean of U and V), ``astigmatism_max_A``
    (largest |U − V| / 2), ``phase_shift_range_deg`` and
    ``b_factor_range_A2`` (when the columns exist), ``optics`` (one entry per
    distinct voltage / Cs / amplitude contrast, weighted by particle count)
    and ``pixel_sizes_A``.
    """
    needed = ["rlnDefocusU", "rlnDefocusV", "rlnVoltage", "rlnSphericalAberration", "rlnAmplitudeContrast"]
    missing = [c for c in needed if c not in table.columns]
    if missing:
        names = ", ".join("_" + c for c in missing)
        raise InputError(f"{path}: column(s) {names} needed for simulator.priors_from_star")
    values = {}
    for column in needed + [c for c in ("rlnPhaseShift", "rlnCtfBfactor") if c in table.columns]:
        column_values = pd.to_numeric(table[column], errors="coerce").to_numpy(dtype=float)
        bad = np.flatnonzero(~np.isfinite(column_values))
        if len(bad):
            raise InputError(f"{path}, particle {bad[0] + 1}: _{column} is not a finite number")
        values[column] = column_values
    mean = 0.5 * (values["rlnDefocusU"] + values["rlnDefocusV"])
    found = {
        "defocus_range_A": [float(mean.min()), float(mean.max())],
        "astigmatism_max_A": float(np.abs(values["rlnDefocusU"] - values["rlnDefocusV"]).max() / 2),
        "pixel_sizes_A": sorted({float(p) for p in table["pixel_size_A"]}),
    }
    if "rlnPhaseShift" in values:
        found["phase_shift_range_deg"] = [float(values["rlnPhaseShift"].min()), float(values["rlnPhaseShift"].max())]
    if "rlnCtfBfactor" in values and np.any(values["rlnCtfBfactor"] != 0):
        # RELION's B-factor multiplies by exp(−B s²/4) with B ≥ 0 for decay, as cryoflow.ctf does
        found["b_factor_range_A2"] = [float(values["rlnCtfBfactor"].min()), float(values["rlnCtfBfactor"].max())]
    keys = np.stack([values["rlnVoltage"], values["rlnSphericalAberration"], values["rlnAmplitudeContrast"]], axis=1)
    groups, counts = np.unique(keys, axis=0, return_counts=True)
    found["optics"] = [
        {"voltage_kV": float(v), "cs_mm": float(cs), "amplitude_contrast": float(ac), "weight": int(c)}
        for (v, cs, ac), c in zip(groups, counts)
    ]
    return found


def parse_image_name(name: str, path="STAR file", row: int | None = None) -> tuple[int, str]:
    """``'12@Extract/job007/stack.mrcs'`` → (11, 'Extract/job007/stack.mrcs'): 0-based index and path."""
    where = f"{path}, particle {row + 1}" if row is not None else str(path)
    if not isinstance(name, str) or "@" not in name:
        raise InputError(f"{where}: _{IMAGE_NAME} {name!r} is not of the form index@stack")
    index, stack = name.split("@", 1)
    try:
        index = int(index)
    except ValueError as err:
        raise InputError(f"{where}: _{IMAGE_NAME} {name!r} has a non-integer index") from err
    if index < 1:
        raise InputError(f"{where}: _{IMAGE_NAME} {name!r}: indices are 1-based")
    return index - 1, stack


def resolve_stack_path(stack: str, star_path: str | Path, datadir: str | Path | None = None) -> Path:
    """Find a stack named in a STAR file the way RELION job folders need.

    Tried in order: ``datadir``/path and ``datadir``/basename (when given), the
    path as written (absolute or relative to the working directory), relative
    to the STAR file's folder and each of its parents (a RELION project root
    lies above the job folder), then the basename in the STAR file's folder.
    """
    written = Path(stack)
    star_dir = Path(star_path).resolve().parent
    candidates = []
    if datadir is not None:
        candidates += [Path(datadir) / written, Path(datadir) / written.name]
    candidates.append(written)
    if not written.is_absolute():
        candidates += [folder / written for folder in (star_dir, *star_dir.parents)]
    candidates.append(star_dir / written.name)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise InputError(
        f"{star_path}: stack {stack!r} in _{IMAGE_NAME} not found "
        f"(tried {len(candidates)} places; set particles.datadir)"
    )


class StackReader:
    """Memory-mapped, lenient access to MRC stacks, a few kept open at a time."""

    def __init__(self, max_open: int = 16):
        self.max_open = max_open
        self._open: OrderedDict[Path, mrcfile.mrcmemmap.MrcMemmap] = OrderedDict()

    def data(self, path: Path) -> np.ndarray:
        if path in self._open:
            self._open.move_to_end(path)
            return self._open[path].data
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                mrc = mrcfile.mmap(path, mode="r", permissive=True)
        except Exception as err:
            raise InputError(f"{path}: unreadable MRC header ({err})") from err
        for warning in caught:
            log.warning("%s: lenient read: %s", path, warning.message)
        if mrc.data is None:
            raise InputError(f"{path}: MRC file has no readable data block")
        self._open[path] = mrc
        if len(self._open) > self.max_open:
            _, oldest = self._open.popitem(last=False)
            oldest.close()
        return mrc.data

    def close(self):
        for mrc in self._open.values():
            mrc.close()
        self._open.clear()


class ParticleSource:
    """Lazy images of the particles of a STAR table, read in chunks from disk."""

    def __init__(self, table: pd.DataFrame, star_path: str | Path, datadir: str | Path | None = None):
        self.star_path = Path(star_path)
        self.table = table.reset_index(drop=True)
        parsed = [parse_image_name(n, star_path, i) for i, n in enumerate(self.table[IMAGE_NAME])]
        self.indices = np.array([p[0] for p in parsed], dtype=np.int64)
        resolved: dict[str, Path] = {}
        for _, stack in parsed:
            if stack not in resolved:
                resolved[stack] = resolve_stack_path(stack, star_path, datadir)
        self.paths = [resolved[p[1]] for p in parsed]
        self.pixel_size_A = self.table["pixel_size_A"].to_numpy(dtype=float)
        self.reader = StackReader()
        self._check_bounds()

    def _check_bounds(self):
        rows_of: dict[Path, list[int]] = {}
        for row, path in enumerate(self.paths):
            rows_of.setdefault(path, []).append(row)
        for path, rows in rows_of.items():
            data = self.reader.data(path)
            n = 1 if data.ndim == 2 else data.shape[0]
            rows = np.asarray(rows)
            bad = rows[self.indices[rows] >= n]
            if len(bad):
                i = bad[0]
                raise InputError(
                    f"{self.star_path}, particle {i + 1}: _{IMAGE_NAME} index {self.indices[i] + 1} is past the "
                    f"end of {path} ({n} images)"
                )

    def __len__(self) -> int:
        return len(self.indices)

    def box(self, i: int) -> int:
        return int(self.reader.data(self.paths[i]).shape[-1])

    def read(self, rows) -> np.ndarray:
        """Images (len(rows), box, box) as float32, in the order of ``rows``."""
        images = []
        for i in rows:
            data = self.reader.data(self.paths[i])
            image = data if data.ndim == 2 else data[self.indices[i]]
            images.append(np.asarray(image, dtype=np.float32))
        out = np.stack(images)
        if not np.all(np.isfinite(out)):
            bad = rows[int(np.flatnonzero(~np.isfinite(out).reshape(len(out), -1).all(1))[0])]
            raise InputError(
                f"{self.paths[bad]}: particle {bad + 1} (_{IMAGE_NAME} {self.table[IMAGE_NAME][bad]}) "
                "has NaN or inf pixels"
            )
        return out


# ------------------------------------------------------------ preprocessing
def fourier_crop(images: np.ndarray, pixel_in_A: float, pixel_out_A: float) -> tuple[np.ndarray, float]:
    """Resample (n, N, N) images to ``pixel_out_A`` by cropping (or zero-padding) their spectrum.

    The new box is the even size closest to N·p_in/p_out; the exact new pixel
    size N·p_in/N' is returned with the images. Pixel values keep their
    per-pixel meaning (a band-limited image keeps its values at shared points).
    """
    n_in = images.shape[-1]
    n_out = max(2, 2 * int(round(n_in * pixel_in_A / pixel_out_A / 2)))
    if n_out == n_in:
        return images.astype(np.float32, copy=False), pixel_in_A
    spectrum = np.fft.fftshift(np.fft.fft2(images), axes=(-2, -1))
    c_in, c_out = n_in // 2, n_out // 2
    if n_out < n_in:
        new = spectrum[..., c_in - c_out : c_in - c_out + n_out, c_in - c_out : c_in - c_out + n_out]
    else:
        new = np.zeros(images.shape[:-2] + (n_out, n_out), dtype=spectrum.dtype)
        new[..., c_out - c_in : c_out - c_in + n_in, c_out - c_in : c_out - c_in + n_in] = spectrum
    out = np.fft.ifft2(np.fft.ifftshift(new, axes=(-2, -1))).real * (n_out / n_in) ** 2
    return out.astype(np.float32), n_in * pixel_in_A / n_out


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


def radial_index(box: int) -> np.ndarray:
    """Integer radius (in Fourier pixels) of every rfft2 coefficient of a box × box image."""
    fy = np.fft.fftfreq(box) * box
    fx = np.fft.rfftfreq(box) * box
    return np.rint(np.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2)).astype(np.int64)


def radial_power(images: np.ndarray) -> np.ndarray:
    """Mean power |F|² per integer radius, averaged over images, for (n, box, box) images."""
    box = images.shape[-1]
    power = (np.abs(np.fft.rfft2(images)) ** 2).mean(axis=0)
    radius = radial_index(box)
    return np.bincount(radius.ravel(), power.ravel()) / np.bincount(radius.ravel())


def radial_to_grid(radial: np.ndarray, box: int) -> np.ndarray:
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


def estimate_noise_power(images: np.ndarray, mask_radius_px: float, iterations: int = 8) -> np.ndarray:
    """Radial noise power spectrum from the pixels outside a circular mask.

    Each image's background is mean-subtracted and the particle disc zeroed.
    Zeroing the disc blurs the spectrum (the window's transform is convolved
    with it), which biases steep low-frequency power; the estimate is
    corrected by iterating S ← S · observed / expected(S), with the expected
    windowed power computed exactly by ``masked_power``.
    """
    box = images.shape[-1]
    outside = ~simulator.circular_mask(box, mask_radius_px).numpy()
    background = images - images[:, outside].mean(axis=1)[:, None, None]
    observed = radial_power(background * outside)
    estimate = observed / outside.mean()
    window = outside.astype(np.float64)
    for _ in range(iterations):
        expected = masked_power(estimate, window)
        estimate = estimate * observed / np.maximum(expected, observed.max() * 1e-12)
    return estimate


def whiten(images: np.ndarray, noise_power: np.ndarray) -> np.ndarray:
    """Divide each image's spectrum by the square root of the radial noise power spectrum."""
    box = images.shape[-1]
    radius = radial_index(box)
    power = noise_power.copy()
    power[0] = power[1]  # the mean carries no noise estimate; treat it like the lowest frequency
    filt = 1.0 / np.sqrt(np.maximum(power, power.max() * 1e-12))
    return np.fft.irfft2(np.fft.rfft2(images) * filt[radius], s=(box, box)).astype(np.float32)


def normalize(images: np.ndarray) -> np.ndarray:
    """Zero mean, unit standard deviation per image, by the simulator's own ``normalize``."""
    return simulator.normalize(torch.from_numpy(np.asarray(images, dtype=np.float32))).numpy()


def to_training_grid(images: np.ndarray, pixel_in_A: float, pixel_out_A: float, box: int) -> np.ndarray:
    """Fourier crop to the training pixel size, then centre crop/pad to the training box."""
    resampled, _ = fourier_crop(images, pixel_in_A, pixel_out_A)
    return crop_or_pad(resampled, box)


def preprocess(
    source: ParticleSource,
    output_mrcs: str | Path,
    box_px: int,
    pixel_size_A: float,
    mask_radius_A: float,
    whiten_noise: bool = True,
    noise_images: int = 1000,
    chunk: int = 512,
    seed: int = 0,
) -> dict:
    """Write the preprocessed stack (n, box, box) float32; return the noise spectra and facts.

    Memory is bounded by ``chunk`` images; the output is written to a
    temporary file and renamed when complete.
    """
    n = len(source)
    groups = np.unique(source.pixel_size_A)
    for p in groups:
        n_in = source.box(int(np.flatnonzero(source.pixel_size_A == p)[0]))
        n_out = max(2, 2 * int(round(n_in * p / pixel_size_A / 2)))
        actual = n_in * p / n_out
        log.info("pixel size %.4g Å, box %d → Fourier box %d at %.4g Å → box %d", p, n_in, n_out, actual, box_px)
        if abs(actual - pixel_size_A) > 0.005 * pixel_size_A:
            log.warning(
                "resampled pixel size %.4g Å differs from the training %.4g Å by more than 0.5%%", actual, pixel_size_A
            )
    rng = np.random.default_rng(seed)
    mask_radius_px = mask_radius_A / pixel_size_A
    noise_power = {}  # measured whether or not it is used: a diagnostic, and a spectrum the simulator can use
    for p in groups:
        rows = np.flatnonzero(source.pixel_size_A == p)
        pick = np.sort(rng.choice(rows, size=min(noise_images, len(rows)), replace=False))
        chunks = np.array_split(pick, max(1, len(pick) // chunk))
        sample = np.concatenate([to_training_grid(source.read(r), p, pixel_size_A, box_px) for r in chunks])
        noise_power[float(p)] = estimate_noise_power(sample, mask_radius_px)
        log.info("noise spectrum for pixel size %.4g Å from %d particles", p, len(pick))
    progress = Progress(n, "preprocess", unit="particles")
    with atomic_path(output_mrcs) as tmp:
        with mrcfile.new_mmap(tmp, shape=(n, box_px, box_px), mrc_mode=2, overwrite=True) as mrc:
            for start in range(0, n, chunk):
                rows = np.arange(start, min(start + chunk, n))
                for p in np.unique(source.pixel_size_A[rows]):
                    sub = rows[source.pixel_size_A[rows] == p]
                    images = to_training_grid(source.read(sub), p, pixel_size_A, box_px)
                    if whiten_noise:
                        images = whiten(images, noise_power[float(p)])
                    mrc.data[sub] = normalize(images)
                progress.update(len(rows))
            mrc.voxel_size = pixel_size_A
            mrc.header.ispg = 0  # an image stack, not a volume
            mrc.update_header_stats()
    return {"n_particles": n, "pixel_sizes_in_A": [float(p) for p in groups], "noise_power": noise_power}


def format_star_value(value) -> str:
    if isinstance(value, (float, np.floating)):
        return f"{value:.6f}" if abs(value) >= 1e-3 or value == 0 else f"{value:.6e}"
    text = str(value)
    return f'"{text}"' if (not text or any(c.isspace() for c in text)) else text


def write_star(path: str | Path, blocks: dict[str, pd.DataFrame], version: int = 30001) -> None:
    """Write data blocks as a RELION loop-style STAR file (``# version`` line first), atomically."""
    lines = [f"# version {version}", ""]
    for name, df in blocks.items():
        lines += [f"data_{name}", "", "loop_"]
        lines += [f"_{column} #{i + 1}" for i, column in enumerate(df.columns)]
        columns = [df[c].to_numpy() for c in df.columns]
        lines += [" ".join(format_star_value(col[r]) for col in columns) for r in range(len(df))]
        lines += ["", ""]
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines))
