"""Projection speed: exact separable Gaussians vs the Fourier fast path, in one run.

Prints images/s of each, their ratio and the fast path's relative L2 error
against the exact projection, for several image and model sizes; then the
whole forward model (pose, projection, CTF, noise, normalization) with atomic
and with map templates, against the exact projection alone.

    python bench/simulator.py [--threads 2] [--batch 256] [--quick]
"""

from __future__ import annotations

import argparse
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from cryoflow.physics.projection import (  # noqa: E402
    AtomTemplates,
    VolumeTemplates,
    project_gaussians_exact,
    project_gaussians_fourier,
)
from cryoflow.physics.rasterize import rasterize_gaussians  # noqa: E402
from cryoflow.physics.simulator import Priors, Simulator  # noqa: E402

# the rest of the benchmarks' prior (here and bench/training.py), explicit: Priors has no defaults
FIXED_PRIORS = {
    "pose_max_angle_deg": None,
    "defocus_range_A": (5000.0, 25000.0),
    "astigmatism_max_A": 0.0,
    "phase_shift_range_deg": (0.0, 0.0),
    "b_factor_range_A2": (0.0, 100.0),
    "mask_radius_A": None,
    "optics": [{"voltage_kV": 300.0, "cs_mm": 2.7, "amplitude_contrast": 0.1, "weight": 1.0}],
}


def images_per_s(fn, batch: int, min_time_s: float = 1.0) -> float:
    fn()  # warm-up
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < min_time_s:
        fn()
        n += batch
    return n / (time.perf_counter() - start)


def fast_projection(coords, weights, sigma_A, box, pixel, oversample):
    spectrum = project_gaussians_fourier(coords, weights, sigma_A, box, pixel, oversample)
    return torch.fft.irfft2(spectrum, s=(box, box))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--sigma-A", type=float, default=2.0)
    parser.add_argument("--quick", action="store_true", help="128 px only")
    parser.add_argument("--part", choices=["all", "projection", "forward"], default="all")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    boxes = [128] if args.quick else [64, 128, 256]
    pixel_for_box = {64: 2.0, 128: 1.0, 256: 0.5}  # same field of view, 128 Å
    print(f"torch {torch.__version__}, {args.threads} threads, batch {args.batch}, bead sigma {args.sigma_A} Å")
    generator = torch.Generator().manual_seed(0)
    if args.part != "forward":
        projection_table(args, boxes, pixel_for_box, generator)
    if args.part != "projection":
        forward_table(args, boxes, pixel_for_box, generator)


def projection_table(args, boxes, pixel_for_box, generator) -> None:
    print(f"{'box':>4} {'beads':>6} {'os':>3} {'exact img/s':>12} {'fast img/s':>11} {'ratio':>7} {'rel. L2':>8}")
    for box in boxes:
        pixel = pixel_for_box[box]
        for beads in (300, 1207, 4000):
            coords = torch.randn(args.batch, beads, 3, generator=generator) * 15.0
            weights = torch.rand(beads, generator=generator) + 0.5
            exact = project_gaussians_exact(coords, weights, args.sigma_A, box, pixel)
            exact_rate = images_per_s(
                partial(project_gaussians_exact, coords, weights, args.sigma_A, box, pixel), args.batch
            )
            for oversample in (1, 2):
                fast = partial(fast_projection, coords, weights, args.sigma_A, box, pixel, oversample)
                error = ((fast() - exact).norm() / exact.norm()).item()
                rate = images_per_s(fast, args.batch)
                print(
                    f"{box:>4} {beads:>6} {oversample:>3} {exact_rate:>12.0f} {rate:>11.0f} "
                    f"{rate / exact_rate:>6.1f}x {100 * error:>7.2f}%"
                )


def forward_table(args, boxes, pixel_for_box, generator) -> None:
    print()
    print("full forward model (pose, projection, CTF, noise, normalization), 1207 beads:")
    print("images/s, and the ratio to the exact projection alone")
    print(
        f"{'box':>4} {'exact proj.':>12} {'atoms os=1':>11} {'ratio':>7} {'atoms os=2':>11} {'ratio':>7} "
        f"{'maps os=3':>10} {'ratio':>7}"
    )
    for box in boxes:
        pixel = pixel_for_box[box]
        base = torch.randn(1207, 3, generator=generator) * 15.0
        templates = torch.stack([base * (1 + 0.01 * k) for k in range(-10, 11)])
        theta = torch.linspace(-10.0, 10.0, 21)
        weights = torch.rand(1207, generator=generator) + 0.5
        coords = templates[10].expand(args.batch, -1, -1).contiguous()
        exact_rate = images_per_s(
            partial(project_gaussians_exact, coords, weights, args.sigma_A, box, pixel), args.batch
        )
        sigma_range, snr_range = (args.sigma_A,) * 2, (0.05, 1.0)
        priors = Priors(
            theta_range_A=(-10.0, 10.0),
            shift_max_A=5.0,
            snr_range=snr_range,
            bead_sigma_range_A=sigma_range,
            **FIXED_PRIORS,
        )
        atom_cells = ""
        for oversample in (1, 2):
            atoms = Simulator(AtomTemplates(templates, theta, weights, oversample=oversample), box, pixel, priors)
            rate = images_per_s(partial(atoms.sample, args.batch, generator), args.batch)
            atom_cells += f" {rate:>11.0f} {rate / exact_rate:>6.1f}x"
        map_cells = "—".rjust(10) + "—".rjust(8)
        if box <= 128:  # maps of 5 templates: 5 · (3·box)³/2 complex values (4.5 GiB at 256 px)
            centred = (templates[::5] - weights @ templates[10] / weights.sum()).numpy()
            bead_weights = weights.numpy()
            maps = [rasterize_gaussians(t, bead_weights, args.sigma_A, pixel, box, np.zeros(3)) for t in centred]
            volumes = VolumeTemplates(torch.as_tensor(np.stack(maps)), theta[::5], pixel, oversample=3)
            simulate = partial(Simulator(volumes, box, pixel, priors).sample, args.batch, generator)
            rate = images_per_s(simulate, args.batch)
            map_cells = f"{rate:>10.0f} {rate / exact_rate:>6.1f}x"
        print(f"{box:>4} {exact_rate:>12.0f}{atom_cells} {map_cells}")


if __name__ == "__main__":
    main()
