"""Synthetic micrographs with known particles, written like a RELION CTF job.

Each micrograph holds particles of the model's ensemble at known positions,
poses and θ (drawn from the demo's populations), at least
``min_separation_A`` apart and clear of the edge by half a training window,
with one empty region (a quarter of the micrograph, no particles), junk
(aggregates of Gaussian blobs and a patch of smooth ice texture), the
micrograph's CTF (its own defocus from the simulator's prior) and coloured
noise, with the protein dark as in a real micrograph (a set's
``contrast: dark``, the default, flips it). Particles' SNRs (the simulator's definition: signal variance inside
the mask over noise variance) are drawn log-uniformly from ``snr_range``.

Written: ``MotionCorr/job002/Micrographs/mic_NNN.mrc``,
``CtfFind/job003/micrographs_ctf.star`` (optics and micrograph blocks,
as RELION writes them) and ``truth.tsv`` (one row per particle or junk
object: micrograph, kind, x and y in pixels, θ, SNR).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import mrcfile
import numpy as np
import pandas as pd
import torch

from cryoflow.demo.dataset import coloured_noise, optics_row, sample_mixture
from cryoflow.io.fileio import atomic_path
from cryoflow.io.star import write_star
from cryoflow.physics import junk
from cryoflow.physics.ctf import CTF, ctf, fourier_frequencies
from cryoflow.physics.simulator import Simulator, masked_variance

log = logging.getLogger(__name__)

MICROGRAPH_DIR = Path("MotionCorr/job002/Micrographs")
CTF_STAR = Path("CtfFind/job003/micrographs_ctf.star")


def place(n: int, size_A: float, margin_A: float, separation_A: float, empty, rng, tries: int = 20000):
    """Up to ``n`` positions (x, y) in Å, ``margin_A`` from the edges, ``separation_A`` apart, none in the
    ``empty`` box (x0, y0, x1, y1)."""
    points: list[tuple[float, float]] = []
    for _ in range(tries):
        if len(points) == n:
            break
        x, y = rng.uniform(margin_A, size_A - margin_A, size=2)
        if empty[0] <= x <= empty[2] and empty[1] <= y <= empty[3]:
            continue
        if all((x - a) ** 2 + (y - b) ** 2 >= separation_A**2 for a, b in points):
            points.append((x, y))
    return points


def paste(canvas: np.ndarray, image: np.ndarray, x_px: int, y_px: int) -> None:
    """Add ``image`` (centre pixel box//2) into ``canvas`` with its centre at column ``x_px``, row ``y_px``."""
    box = image.shape[-1]
    r0, c0 = y_px - box // 2, x_px - box // 2
    rs, cs = max(0, -r0), max(0, -c0)
    re, ce = min(box, canvas.shape[0] - r0), min(box, canvas.shape[1] - c0)
    canvas[r0 + rs : r0 + re, c0 + cs : c0 + ce] += image[rs:re, cs:ce]


@dataclass(frozen=True)
class MicrographDraw:
    """One micrograph's own draws: its name, defocus, B-factor, empty box (x0, y0, x1, y1) in Å and the
    positions (Å) of its particles, then its junk."""

    name: str
    defocus_A: float
    b_factor_A2: float
    empty_A: tuple[float, float, float, float]
    spots_A: list[tuple[float, float]]
    n_particles: int


def draw_micrograph(index: int, settings: dict, priors, size_A: float, window_A: float, rng) -> MicrographDraw:
    name = (MICROGRAPH_DIR / f"mic_{index + 1:03d}.mrc").as_posix()
    defocus = float(rng.uniform(*priors.defocus_range_A))
    b_factor = float(rng.uniform(*priors.b_factor_range_A2))
    corner = rng.uniform(0, size_A / 2, size=2)
    empty = (corner[0], corner[1], corner[0] + size_A / 2, corner[1] + size_A / 2)
    margin = 0.5 * window_A + settings["min_separation_A"] * 0.1
    n_objects = settings["particles_per_micrograph"] + settings["junk_per_micrograph"]
    spots = place(n_objects, size_A, margin, settings["min_separation_A"], empty, rng)
    n_particles = min(settings["particles_per_micrograph"], len(spots))
    return MicrographDraw(name, defocus, b_factor, empty, spots, n_particles)


def truth_row(draw: MicrographDraw, kind: str, x_px: int, y_px: int, theta_A: float, snr: float) -> dict:
    return {"micrograph": draw.name, "kind": kind, "x_px": x_px, "y_px": y_px, "theta_A": theta_A, "snr": snr}


def add_particles(canvas, simulator: Simulator, draw: MicrographDraw, settings: dict, rng, generator):
    """Paste the particles at the micrograph's CTF, each scaled to its SNR against one noise level; returns
    (the noise variance, their SNRs, their truth rows)."""
    n, pixel = draw.n_particles, simulator.pixel_size_A
    theta, _ = sample_mixture(n, settings["populations"], simulator.priors.theta_range_A, rng)
    nuisance = simulator.sample_nuisance(n, generator)
    same = torch.ones(n)
    nuisance.update(
        defocus_u_A=draw.defocus_A * same,
        defocus_v_A=draw.defocus_A * same,
        b_factor_A2=draw.b_factor_A2 * same,
        shift_A=torch.zeros(n, 2),
        phase_shift_deg=0 * same,
    )
    snr = np.exp(rng.uniform(*np.log(settings["snr_range"]), size=n))
    with torch.no_grad():
        signal = simulator.noiseless(torch.as_tensor(theta, dtype=torch.float32), nuisance)
        signal_var = masked_variance(signal, simulator.mask).numpy()
    noise_var = float(np.median(signal_var / snr))  # one noise level; particles' signal scaled to their SNR
    truth = []
    for i in range(n):
        x_px, y_px = int(round(draw.spots_A[i][0] / pixel)), int(round(draw.spots_A[i][1] / pixel))
        paste(canvas, signal[i].numpy() * np.sqrt(snr[i] * noise_var / signal_var[i]), x_px, y_px)
        truth.append(truth_row(draw, "particle", x_px, y_px, float(np.atleast_1d(theta[i])[0]), float(snr[i])))
    return noise_var, snr, truth


def add_junk(canvas, simulator: Simulator, draw: MicrographDraw, noise_var: float, snr, generator) -> list[dict]:
    """Paste aggregates at the remaining spots (denser than protein) and a patch of ice texture (a quarter
    of the micrograph, inside the empty region, at half the noise variance); returns the aggregates' truth rows."""
    pixel, size = simulator.pixel_size_A, canvas.shape[0]
    spots = draw.spots_A[draw.n_particles :]
    blobs = torch.as_tensor(junk.aggregates(simulator, len(spots), generator))
    truth = []
    for k, spot in enumerate(spots):
        x_px, y_px = int(round(spot[0] / pixel)), int(round(spot[1] / pixel))
        blob = blobs[k].numpy() * 2.0  # denser than protein: aggregates are bigger and darker
        scale = np.sqrt(np.median(snr) * noise_var / max(blob[simulator.mask.numpy()].var(), 1e-12))
        paste(canvas, _ctf_image(blob[None], simulator, draw.defocus_A, draw.b_factor_A2)[0] * scale, x_px, y_px)
        truth.append(truth_row(draw, "junk", x_px, y_px, float("nan"), float("nan")))
    texture = _smooth_field(size, pixel, 150.0, generator)
    patch = np.zeros((size, size))
    e = (np.array(draw.empty_A) / pixel).astype(int)
    patch[e[1] : e[1] + (e[3] - e[1]) // 2, e[0] : e[2]] = 1.0
    ice = _ctf_image((texture * patch)[None], simulator, draw.defocus_A, draw.b_factor_A2, size)[0]
    canvas += ice * np.sqrt(0.5 * noise_var)
    return truth


def ctf_star_blocks(draws: list[MicrographDraw], pixel_A: float, optics: dict) -> dict[str, pd.DataFrame]:
    """The optics and micrograph blocks of ``micrographs_ctf.star``, as RELION's CTF job writes them."""
    group = {**optics_row(pixel_A, optics), "rlnMicrographPixelSize": pixel_A}
    rows = [
        {
            "rlnMicrographName": d.name,
            "rlnOpticsGroup": 1,
            "rlnDefocusU": d.defocus_A,
            "rlnDefocusV": d.defocus_A,
            "rlnDefocusAngle": 0.0,
            "rlnCtfBfactor": d.b_factor_A2,
            "rlnCtfMaxResolution": 4.0,
        }
        for d in draws
    ]
    return {"optics": pd.DataFrame([group]), "micrographs": pd.DataFrame(rows)}


def make_micrographs(simulator: Simulator, out_dir: str | Path, settings: dict, window_A: float, seed: int) -> Path:
    """Simulate the micrographs of ``settings`` (a micrograph set's ``demo`` section); returns the STAR path.

    ``simulator`` projects at the micrographs' pixel size on a box that holds one particle and its CTF
    fringes; ``window_A`` is the training window's side (positions keep half of it from the edges).
    """
    out_dir = Path(out_dir)
    rng = np.random.default_rng(seed)
    generator = torch.Generator().manual_seed(seed)
    pixel, size = simulator.pixel_size_A, settings["size_px"]
    draws, truth = [], []
    for m in range(settings["n_micrographs"]):
        draw = draw_micrograph(m, settings, simulator.priors, size * pixel, window_A, rng)
        canvas = np.zeros((size, size), np.float64)
        noise_var, snr, particles = add_particles(canvas, simulator, draw, settings, rng, generator)
        truth += particles + add_junk(canvas, simulator, draw, noise_var, snr, generator)
        colour = settings["noise_colour_strength"], settings["noise_corner_A"]
        noise = coloured_noise(1, size, pixel, *colour, generator)[0].numpy()
        micrograph = -(canvas + noise * np.sqrt(noise_var)).astype(np.float32)  # protein dark, as recorded
        with atomic_path(out_dir / draw.name) as tmp, mrcfile.new(tmp, overwrite=True) as mrc:
            mrc.set_data(micrograph)
            mrc.voxel_size = pixel
        draws.append(draw)
        n_junk = len(draw.spots_A) - draw.n_particles
        log.info("wrote %s: %d particles, %d junk, defocus %.0f Å", draw.name, draw.n_particles, n_junk, draw.defocus_A)
    star = out_dir / CTF_STAR
    write_star(star, ctf_star_blocks(draws, pixel, simulator.priors.optics[0]))
    with atomic_path(out_dir / "truth.tsv") as tmp:
        pd.DataFrame(truth).to_csv(tmp, sep="\t", index=False)
    return star


def _ctf_image(images: np.ndarray, simulator: Simulator, defocus_A: float, b_factor_A2: float, box=None):
    """Square images (n, box, box) through the micrograph's CTF (astigmatism-free)."""
    box = box or images.shape[-1]
    s_y, s_x = fourier_frequencies(box, simulator.pixel_size_A)
    transfer = ctf(s_y, s_x, CTF.unastigmatic(defocus_A, simulator.priors.optics[0], b_factor_A2))
    spectrum = torch.fft.rfft2(torch.as_tensor(images, dtype=torch.float32)) * transfer
    return torch.fft.irfft2(spectrum, s=(box, box)).numpy()


def _smooth_field(size: int, pixel_A: float, length_A: float, generator) -> np.ndarray:
    s_y, s_x = fourier_frequencies(size, pixel_A)
    white = torch.randn(size, size, generator=generator)
    field = torch.fft.irfft2(
        torch.fft.rfft2(white) / (1.0 + (torch.sqrt(s_x**2 + s_y**2) * length_A) ** 2), s=(size, size)
    )
    return (field / field.std()).numpy()
