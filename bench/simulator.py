"""Projection speed: exact separable Gaussians vs the Fourier fast path, in one run.

Prints images/s of each, their ratio and the fast path's relative L2 error
against the exact projection, for several image and model sizes.

    python bench/simulator.py [--threads 2] [--batch 256] [--quick]
"""

from __future__ import annotations

import argparse
import sys
import time
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from cryoflow.simulator import project_gaussians_exact, project_gaussians_fourier  # noqa: E402


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
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    boxes = [128] if args.quick else [64, 128, 256]
    pixel_for_box = {64: 2.0, 128: 1.0, 256: 0.5}  # same field of view, 128 Å
    print(f"torch {torch.__version__}, {args.threads} threads, batch {args.batch}, bead sigma {args.sigma_A} Å")
    print(f"{'box':>4} {'beads':>6} {'os':>3} {'exact img/s':>12} {'fast img/s':>11} {'ratio':>7} {'rel. L2':>8}")
    generator = torch.Generator().manual_seed(0)
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
                print(f"{box:>4} {beads:>6} {oversample:>3} {exact_rate:>12.0f} {rate:>11.0f} "
                      f"{rate / exact_rate:>6.1f}x {100 * error:>7.2f}%")  # fmt: skip


if __name__ == "__main__":
    main()
