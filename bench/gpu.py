"""The GPU figures in one run and one JSON: training, inference, the explicit likelihood and the levers' speed.

Measured on whatever device torch finds (CUDA when present; on a CPU with ``--quick`` it checks that the script
runs). Every figure is from the same process, so their ratios hold; absolute ones come with the card's name.

* ``train_demo``: ``cryoflow.sbi.training.train`` at the demo's size (64 px, ResNet width 16, 64-d latent,
  3 transforms, batch 128, a quarter junk), images/s;
* ``train_demo_crop32``: the same with ``train.embedding.crop_px: 32`` (the band-limit lever);
* ``train_production``: the paper's network (ResNet-18 width 64, 256-d latent, NSF 5 × 12 layers) on 128 px
  images in batches of 256 with bfloat16 autocast where the card has it natively;
* ``infer_production``: ``posterior_stream`` (embedding, 512-point θ grid, summaries, 100 samples) with that
  network on 128 px images, particles/s;
* ``likelihood``: the explicit likelihood at the schema's default grids on 64 px images, images/s.

    bash bench/gpu.sh            # what a lent GPU runs: this script under an 8-minute limit
    python bench/gpu.py --out gpu.json [--quick]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from training import PAPER_HIDDEN, bench_problem, synchronize  # noqa: E402  (bench/training.py)

from cryoflow.likelihood import comparison, exact  # noqa: E402
from cryoflow.sbi import devices, inference, training  # noqa: E402
from cryoflow.sbi.models import PosteriorEstimator  # noqa: E402
from cryoflow.workflow import schema  # noqa: E402


def settings(steps: int, batch: int, junk: float) -> training.TrainingConfig:
    return training.TrainingConfig(
        steps=steps,
        batch_size=batch,
        learning_rate=1e-3,
        weight_decay=0.01,
        clip_grad_norm=5.0,
        lr_schedule="cosine",
        validation_size=batch,
        validate_every=10**9,
        seed=0,
        checkpoint_every=10**9,
        max_hours=None,
        mixed_precision=True,
        junk_fraction=junk,
    )


def train_rate(model, box: int, steps: int, batch: int, junk: float, device) -> dict:
    sim = bench_problem(box, device)
    model = model.to(device)
    training.train(model, sim, settings(2, batch, junk))  # warm-up: kernels, allocator
    synchronize(device)
    start = time.perf_counter()
    training.train(model, sim, settings(steps, batch, junk))
    synchronize(device)
    seconds = time.perf_counter() - start
    return {"images_per_s": steps * batch / seconds, "steps": steps, "batch": batch, "box_px": box, "s": seconds}


def demo_model(crop_px=None):
    return PosteriorEstimator(
        (-10.0, 10.0),
        latent_dim=64,
        width=16,
        transforms=3,
        hidden_features=(64,) * 3,
        particle_head=True,
        crop_px=crop_px,
    )


def paper_model():
    return PosteriorEstimator((-10.0, 10.0), latent_dim=256, width=64, transforms=5, hidden_features=PAPER_HIDDEN)


def infer_rate(n: int, device) -> dict:
    model = paper_model().to(device)
    images = torch.randn(n, 128, 128, device=device)
    batches = (images[i : i + 256] for i in range(0, n, 256))
    list(inference.posterior_stream(model, (images[:256],), 256, device=device))  # warm-up
    synchronize(device)
    start = time.perf_counter()
    for _ in inference.posterior_stream(model, batches, n, device=device):
        pass
    synchronize(device)
    seconds = time.perf_counter() - start
    return {"particles_per_s": n / seconds, "n": n, "box_px": 128, "s": seconds}


def likelihood_rate(n: int, device) -> dict:
    sim = bench_problem(64, device)
    engine = exact.ExplicitLikelihood(sim, comparison.grid_settings(schema.likelihood_defaults({}), "marginalized"))
    _, images = sim.sample(n, torch.Generator(device=device).manual_seed(0))
    engine.log_likelihood(images[:1])  # warm-up
    synchronize(device)
    start = time.perf_counter()
    engine.log_likelihood(images)
    synchronize(device)
    seconds = time.perf_counter() - start
    return {"images_per_s": n / seconds, "n": n, "box_px": 64, "templates": 21, "s": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="gpu.json")
    parser.add_argument("--quick", action="store_true", help="a few steps each: checks the script, not the device")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = devices.select_device("auto", "device")
    steps, n = (3, 256) if args.quick else (200, 20_000)
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "CPU"
    result: dict = {
        "device": card,
        "torch": torch.__version__,
        "bf16_native": bool(device.type == "cuda" and torch.cuda.is_bf16_supported(including_emulation=False)),
    }
    for name, run in (
        ("train_demo", lambda: train_rate(demo_model(), 64, steps, 128, 0.25, device)),
        ("train_demo_crop32", lambda: train_rate(demo_model(32), 64, steps, 128, 0.25, device)),
        ("train_production", lambda: train_rate(paper_model(), 128, max(3, steps // 4), 256, 0.0, device)),
        ("infer_production", lambda: infer_rate(n, device)),
        ("likelihood", lambda: likelihood_rate(1 if args.quick else 16, device)),
    ):
        result[name] = run()
        print(name, json.dumps(result[name]), flush=True)
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")  # what was measured survives a timeout
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
