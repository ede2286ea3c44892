"""What a 2-D θ costs at inference: posterior summaries per particle, 1-D grid vs 2-D grids.

For a 1-D θ the flow's spline parameters depend on the latent only, so the
network runs once per particle; for a 2-D θ each coordinate's splines depend
on the other, so it runs once per grid cell and particle. This times
``posterior_stream`` (embedding + grid density + summaries + samples) on
random images of the training box for the demo's estimator (64-d latent,
width 16, NSF 3 × [64, 64, 64]) and the paper's (256-d latent, width 64,
NSF 5 × 10·256 + 128 + 64); random weights: speed does not depend on them.
Prints particles/s per grid and the ratio to the 1-D grid, in one run.

    python bench/theta_2d.py [--n 512] [--box 64] [--threads 2] [--grids 32 48 64]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from cryoflow.sbi import inference  # noqa: E402
from cryoflow.sbi.models import PosteriorEstimator  # noqa: E402

ESTIMATORS = {
    "demo": {"latent_dim": 64, "width": 16, "transforms": 3, "hidden_features": (64, 64, 64)},
    "paper": {"latent_dim": 256, "width": 64, "transforms": 5, "hidden_features": (256,) * 10 + (128, 64)},
}


def rate(model, images: np.ndarray, batch: int, **grid) -> float:
    """Particles/s of posterior_stream over ``images`` (best of two passes)."""
    best = float("inf")
    for _ in range(2):
        start = time.perf_counter()
        for _ in inference.posterior_stream(
            model, inference.batched(images, batch), len(images), n_samples=200, label="bench", **grid
        ):
            pass
        best = min(best, time.perf_counter() - start)
    return len(images) / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=512, help="particles per timing")
    parser.add_argument("--box", type=int, default=64)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--grids", type=int, nargs="+", default=[32, 48, 64], help="cells per axis for 2-D θ")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    images = np.random.default_rng(0).normal(size=(args.n, args.box, args.box)).astype(np.float32)
    print(
        f"torch {torch.__version__} on cpu, {args.threads} threads, {args.n} particles of {args.box} px, "
        f"batch {args.batch}, 200 samples per particle"
    )
    print(f"{'estimator':<9} {'θ grid':<14} {'cells':>6} {'particles/s':>12} {'vs 1-D':>7}")
    for name, sizes in ESTIMATORS.items():
        torch.manual_seed(0)
        one = PosteriorEstimator((-9.0, 9.0), **sizes).eval()
        torch.manual_seed(0)
        two = PosteriorEstimator([[-9.0, 9.0], [-9.0, 9.0]], **sizes).eval()
        base = rate(one, images, args.batch, grid_points=512)
        print(f"{name:<9} {'1-D, 512':<14} {512:>6} {base:>12.1f} {1.0:>7.2f}", flush=True)
        for cells in args.grids:
            value = rate(two, images, args.batch, grid_points_2d=cells)
            label = f"2-D, {cells}²"
            print(f"{name:<9} {label:<14} {cells * cells:>6} {value:>12.1f} {value / base:>7.2f}", flush=True)


if __name__ == "__main__":
    main()
