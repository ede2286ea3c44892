"""Micrograph evaluation speed: windows/s and seconds per 4k micrograph, batched vs one call per window.

For the demo's network (64 px at 2 Å, width 16, 64-d latent, 3 × [64, 64, 64] flow) and the paper's
(128 px at 1.5 Å, ResNet-18 width 64, 256-d latent, 5 transforms with the paper's hidden layers), with a
particle output as junk-aware models have, random weights (speed does not depend on them):

* the per-micrograph steps on a 4096 × 4096 float32 micrograph at 1 Å: Fourier resampling to the
  training pixel and the noise spectrum from tiles (measured on the whole micrograph);
* windows/s of ``picking.evaluate_micrograph``'s path (whitening, normalization, network, 1-D posterior
  on a 128-cell grid, latent atypicality against 1 000 reference latents), batched (``--batch``), on
  the first ``--windows`` windows at stride ``--stride``;
* windows/s of the same, one window per call (``--single`` windows), the naive way;
* seconds per 4k micrograph: the per-micrograph steps plus all its windows at the batched rate.

Run on whichever device is given (``--device auto`` takes CUDA when present).

    python bench/micrograph.py [--windows 1024] [--single 48] [--stride 4] [--batch 256] [--threads 2]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from cryoflow.analysis import picking, predictive  # noqa: E402
from cryoflow.sbi import devices, inference
from cryoflow.sbi.models import PosteriorEstimator  # noqa: E402

SIZES = {
    "demo": {"box": 64, "pixel_A": 2.0, "latent_dim": 64, "width": 16, "transforms": 3, "hidden": (64, 64, 64)},
    "paper": {
        "box": 128,
        "pixel_A": 1.5,
        "latent_dim": 256,
        "width": 64,
        "transforms": 5,
        "hidden": (256,) * 10 + (128, 64),
    },
}
MICROGRAPH_PX, MICROGRAPH_PIXEL_A = 4096, 1.0


def window_rate(model, image, box, stride, noise_power, reference, n_windows, batch, device) -> float:
    """Windows/s of the micrograph path on the first ``n_windows`` windows, in batches of ``batch``."""
    batches = picking.window_batches(image, box, stride, noise_power, batch, limit=n_windows)

    start = time.perf_counter()
    for summary in inference.posterior_stream(
        model, batches, n_windows, grid_points=128, n_samples=1, device=device, label="bench"
    ):
        reference.pvalues(summary["latent"])
    if device.type == "cuda":
        torch.cuda.synchronize()
    return n_windows / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=1024)
    parser.add_argument("--single", type=int, default=48)
    parser.add_argument("--stride", type=int, default=4)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = devices.select_device(args.device)
    rng = np.random.default_rng(0)
    micrograph = rng.normal(size=(MICROGRAPH_PX, MICROGRAPH_PX)).astype(np.float32)
    rows = []
    for name, size in SIZES.items():
        torch.manual_seed(0)
        model = PosteriorEstimator(
            (-10.0, 10.0),
            latent_dim=size["latent_dim"],
            width=size["width"],
            transforms=size["transforms"],
            hidden_features=size["hidden"],
            particle_head=True,
        ).to(device)
        reference = predictive.LatentReference(rng.normal(size=(1000, size["latent_dim"])))
        start = time.perf_counter()
        image, pixel = picking.resample_micrograph(micrograph, MICROGRAPH_PIXEL_A, size["pixel_A"])
        image = image - image.mean()
        noise_power = picking.tile_noise_power(image, size["box"])
        fixed_s = time.perf_counter() - start
        grid = picking.window_grid(image.shape, size["box"], args.stride)
        n_total = len(grid[0]) * len(grid[1])
        window_rate(
            model, image, size["box"], args.stride, noise_power, reference, min(64, args.batch), args.batch, device
        )  # warm-up
        batched = window_rate(
            model, image, size["box"], args.stride, noise_power, reference, args.windows, args.batch, device
        )
        single = window_rate(model, image, size["box"], args.stride, noise_power, reference, args.single, 1, device)
        rows.append(
            (
                name,
                f"{size['box']} px at {size['pixel_A']} Å",
                image.shape[0],
                n_total,
                fixed_s,
                batched,
                single,
                fixed_s + n_total / batched,
            )
        )
    print(
        f"\ndevice: {devices.device_name(device)}; 4096² micrograph at 1 Å, stride {args.stride} training px, "
        f"batch {args.batch}\n"
    )
    header = (
        "network",
        "window",
        "resampled px",
        "windows / micrograph",
        "resample + noise s",
        "windows/s batched",
        "windows/s one per call",
        "batched / one per call",
        "s per 4k micrograph",
    )
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for name, window, side, n_total, fixed_s, batched, single, total in rows:
        print(
            f"| {name} | {window} | {side} | {n_total} | {fixed_s:.2f} | {batched:.0f} | {single:.1f} | "
            f"{batched / single:.1f}× | {total:.0f} |"
        )


if __name__ == "__main__":
    main()
