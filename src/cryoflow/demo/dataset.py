"""A synthetic "experimental" dataset with known conformations, written like RELION.

The dataset is what makes the demo a test of the method: particles are
simulated at their own pixel size and box (not the training grid), with
per-particle CTF parameters recorded in the STAR file, coloured noise, and a
known mixture of conformations whose true θ is kept in
``_cryoflowTrueThetaAngst`` (``_cryoflowTrueTheta1Angst`` and ``…2…`` for
a 2-D θ). The layout is that of a RELION 3.1 Extract job:
``Extract/job007/particles.star`` naming ``idx@Extract/job007/Movies/*.mrcs``
relative to the project folder.
"""

from __future__ import annotations

import logging
from pathlib import Path

import mrcfile
import numpy as np
import pandas as pd
import torch

from cryoflow.io.fileio import atomic_path
from cryoflow.io.star import write_star
from cryoflow.physics.ctf import fourier_frequencies
from cryoflow.physics.simulator import Simulator, masked_variance, normalize
from cryoflow.physics.theta import bounds, true_theta_columns

log = logging.getLogger(__name__)

JOB_DIR = Path("Extract/job007")


def sample_mixture(n: int, populations: list[dict], theta_range_A, rng: np.random.Generator):
    """θ (n,), or (n, 2) for a 2-D range, from an isotropic Gaussian mixture ``[{theta_A, sd_A, weight}]``
    clipped to the prior range; ``theta_A`` is a number, or [θ₁, θ₂]."""
    ranges = bounds(theta_range_A)
    weights = np.array([p["weight"] for p in populations], dtype=float)
    component = rng.choice(len(populations), size=n, p=weights / weights.sum())
    centre = np.array([np.atleast_1d(p["theta_A"]) for p in populations], dtype=float)[component]
    spread = np.array([p["sd_A"] for p in populations], dtype=float)[component, None]
    theta = np.clip(rng.normal(centre, spread), ranges[:, 0], ranges[:, 1])
    return (theta[:, 0] if len(ranges) == 1 else theta), component


def coloured_noise(n: int, box: int, pixel_size_A: float, strength: float, corner_A: float, generator):
    """Unit-variance Gaussian noise with power ∝ 1 + strength / (1 + (s · corner_A)²)."""
    s_y, s_x = fourier_frequencies(box, pixel_size_A)
    s = torch.sqrt(s_x**2 + s_y**2)
    shape = torch.sqrt(1.0 + strength / (1.0 + (s * corner_A) ** 2))
    white = torch.randn(n, box, box, generator=generator)
    noise = torch.fft.irfft2(torch.fft.rfft2(white) * shape, s=(box, box))
    return noise / noise.std(dim=(-2, -1), keepdim=True)


def optics_row(pixel_size_A: float, optics: dict) -> dict:
    """A RELION 3.1 optics-group row of the demo's one optics group (``simulator.priors.optics[0]``)."""
    return {
        "rlnOpticsGroupName": "opticsGroup1",
        "rlnOpticsGroup": 1,
        "rlnMicrographOriginalPixelSize": pixel_size_A,
        "rlnVoltage": optics["voltage_kV"],
        "rlnSphericalAberration": optics["cs_mm"],
        "rlnAmplitudeContrast": optics["amplitude_contrast"],
    }


def simulate_stack(simulator: Simulator, theta: torch.Tensor, snr_range, colour: tuple[float, float], rng, generator):
    """Normalized images of the particles at ``theta``, their SNRs log-uniform in ``snr_range`` and coloured
    noise (strength, corner in Å); returns (images, nuisance with ``snr``)."""
    n = len(theta)
    nuisance = simulator.sample_nuisance(n, generator)
    log_snr = rng.uniform(np.log(snr_range[0]), np.log(snr_range[1]), size=n)
    nuisance["snr"] = torch.as_tensor(np.exp(log_snr), dtype=torch.float32)
    with torch.no_grad():
        signal = simulator.noiseless(theta, nuisance)
        signal_var = masked_variance(signal, simulator.mask)
        noise = coloured_noise(n, simulator.box, simulator.pixel_size_A, *colour, generator)
        images = normalize(signal + noise * torch.sqrt(signal_var / nuisance["snr"])[:, None, None])
    return images, nuisance


def particle_row(k: int, stack_no: int, stack: str, nuisance: dict, rng) -> dict:
    """The STAR row of particle ``k`` of stack ``stack_no``: image, micrograph, coordinates and its CTF."""
    return {
        "rlnImageName": f"{k + 1:06d}@{stack}",
        "rlnMicrographName": f"MotionCorr/job002/Movies/mic_{stack_no:04d}.mrc",
        "rlnCoordinateX": float(rng.uniform(200, 3800)),
        "rlnCoordinateY": float(rng.uniform(200, 3800)),
        "rlnDefocusU": float(nuisance["defocus_u_A"][k]),
        "rlnDefocusV": float(nuisance["defocus_v_A"][k]),
        "rlnDefocusAngle": float(nuisance["astigmatism_angle_deg"][k]),
        "rlnCtfBfactor": float(nuisance["b_factor_A2"][k]),
        "rlnPhaseShift": float(nuisance["phase_shift_deg"][k]),
        "rlnOpticsGroup": 1,
    }


def make_dataset(
    simulator: Simulator,
    out_dir: str | Path,
    n_particles: int,
    populations: list[dict],
    snr_range: tuple[float, float],
    noise_colour_strength: float,
    noise_corner_A: float,
    particles_per_stack: int,
    seed: int,
) -> Path:
    """Simulate the particles, write stacks and the STAR file; return the STAR path."""
    out_dir = Path(out_dir)
    rng = np.random.default_rng(seed)
    generator = torch.Generator().manual_seed(seed)
    theta, component = sample_mixture(n_particles, populations, simulator.priors.theta_range_A, rng)
    theta_t = torch.as_tensor(theta, dtype=torch.float32)
    true_columns = true_theta_columns(theta)
    colour = (noise_colour_strength, noise_corner_A)
    rows = []
    for stack_no, start in enumerate(range(0, n_particles, particles_per_stack), start=1):
        stop = min(start + particles_per_stack, n_particles)
        images, nuisance = simulate_stack(simulator, theta_t[start:stop], snr_range, colour, rng, generator)
        stack_rel = JOB_DIR / "Movies" / f"mic_{stack_no:04d}.mrcs"
        with atomic_path(out_dir / stack_rel) as tmp, mrcfile.new(tmp, overwrite=True) as mrc:
            mrc.set_data(images.numpy().astype(np.float32))
            mrc.voxel_size = simulator.pixel_size_A
            mrc.header.ispg = 0
        for k, i in enumerate(range(start, stop)):
            row = particle_row(k, stack_no, stack_rel.as_posix(), nuisance, rng)
            row.update({key: float(value[i]) for key, value in true_columns.items()})
            row.update(cryoflowTruePopulation=int(component[i]) + 1, cryoflowTrueSNR=float(nuisance["snr"][k]))
            rows.append(row)
        log.info("wrote %s (%d particles)", stack_rel, stop - start)
    optics = optics_row(simulator.pixel_size_A, simulator.priors.optics[0])
    optics.update(rlnImagePixelSize=simulator.pixel_size_A, rlnImageSize=simulator.box, rlnImageDimensionality=2)
    star = out_dir / JOB_DIR / "particles.star"
    write_star(star, {"optics": pd.DataFrame([optics]), "particles": pd.DataFrame(rows)})
    return star
