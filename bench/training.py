"""Training throughput at the paper's sizes: on-the-fly simulation vs the upstream loop, in one run.

Both loops train the same estimator (ResNet-18 embedding, 256-d latent, NSF
with 5 transforms and the paper's hidden layers) on 128 px images in batches
of 256 with AdamW and gradient clipping:

* on the fly (cryoflow): every step simulates its batch on the training
  device with the Fourier fast path, then takes the optimizer step;
* upstream: simulate the images for all steps first with the exact separable
  projection, keep them on the host, then split them into batches that are
  moved to the device for each step.

Prints simulated images/s, training steps/s and end-to-end images/s for each,
and their ratio. Uses CUDA when present.

With ``--ranks 1,2`` a second table: ``cryoflow.sbi.training.train`` itself on 1,
2, … data-parallel ranks (torchrun; gloo ranks sharing ``--threads`` cores on
the CPU, one GPU per rank on CUDA), the same global batch, images/s and the
speed-up over one rank. On a 2-core CPU two ranks cannot be faster: that row
measures the overhead of the gradient and batch-norm all-reduces.

    python bench/training.py [--threads 2] [--steps 2] [--box 128] [--batch 256]
    python bench/training.py --ranks 1,2 [--rank-steps 30] [--rank-box 64] [--rank-width 16] [--rank-batch 64]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from simulator import FIXED_PRIORS  # noqa: E402  (bench/simulator.py: the benchmarks' one prior)

from cryoflow.physics.projection import AtomTemplates, interpolate_coords, project_gaussians_exact  # noqa: E402
from cryoflow.physics.simulator import Priors, Simulator, add_noise, normalize  # noqa: E402
from cryoflow.sbi import distributed, training  # noqa: E402
from cryoflow.sbi.models import PosteriorEstimator, count_parameters  # noqa: E402

PAPER_HIDDEN = (256,) * 10 + (128, 64)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def simulate_upstream(sim: Simulator, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The same forward model with the exact separable projection, as upstream cryoSBI computes it."""
    theta = sim.sample_theta(n, generator)
    nuisance = sim.sample_nuisance(n, generator)
    templates = sim.templates
    coords = interpolate_coords(templates.coords, templates.theta_A, theta) @ nuisance["rotation"].transpose(-1, -2)
    coords = coords[..., :2] + nuisance["shift_A"][:, None, :]
    images = project_gaussians_exact(
        coords, templates.weights, sim.priors.bead_sigma_range_A[0], sim.box, sim.pixel_size_A
    )

    images = torch.fft.irfft2(torch.fft.rfft2(images) * sim.transfer(nuisance), s=(sim.box, sim.box))
    images = add_noise(images, nuisance["snr"], sim.mask, sim.noise(n, generator))
    return theta, normalize(images)


def train_step(model, optimizer, theta, images) -> None:
    loss = -model.log_prob(theta, images).mean()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
    optimizer.step()


def new_model(device):
    model = PosteriorEstimator((-10.0, 10.0), latent_dim=256, width=64, transforms=5, hidden_features=PAPER_HIDDEN)
    model = model.to(device, memory_format=torch.channels_last).train()
    return model, torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.01)


def bench_problem(box: int, device) -> Simulator:
    """1 207 beads in 21 templates, 128 Å across whatever the box."""
    base = torch.randn(1207, 3, generator=torch.Generator().manual_seed(1)) * 15.0
    templates = torch.stack([base * (1 + 0.01 * k) for k in range(-10, 11)])
    priors = Priors(
        theta_range_A=(-10.0, 10.0),
        shift_max_A=5.0,
        snr_range=(0.05, 1.0),
        bead_sigma_range_A=(2.0, 2.0),
        **FIXED_PRIORS,
    )
    weights = torch.rand(1207, generator=torch.Generator().manual_seed(2)) + 0.5
    atoms = AtomTemplates(templates, torch.linspace(-10, 10, 21), weights, oversample=1, device=device)
    return Simulator(atoms, box, 128.0 / box, priors)


def rank_worker(args) -> None:
    """One rank of the data-parallel table: ``training.train`` for ``--rank-steps`` steps; rank 0 prints images/s."""
    world = distributed.World.from_env()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = distributed.rank_device(world, device)
    torch.set_num_threads(max(1, args.threads // world.size))
    distributed.start(world, device)
    model = PosteriorEstimator(
        (-10.0, 10.0), latent_dim=64, width=args.rank_width, transforms=3, hidden_features=(64, 64)
    )
    settings = dict(
        steps=args.rank_steps,
        batch_size=args.rank_batch,
        learning_rate=3e-4,
        weight_decay=0.01,
        clip_grad_norm=5.0,
        lr_schedule="cosine",
        validation_size=32,
        validate_every=args.rank_steps,
        seed=0,
        checkpoint_every=10**9,
        max_hours=None,
        mixed_precision=True,
        junk_fraction=0.0,
    )
    sim = bench_problem(args.rank_box, device)
    training.train(model, sim, training.TrainingConfig(**{**settings, "steps": 2}), world=world)  # warm-up
    start = time.perf_counter()
    training.train(model, sim, training.TrainingConfig(**settings), world=world)
    seconds = time.perf_counter() - start
    if world.main:
        print("RESULT " + json.dumps({"images_per_s": args.rank_steps * args.rank_batch / seconds, "s": seconds}))
    distributed.stop()


def rank_table(args) -> None:
    counts = [int(r) for r in args.ranks.split(",")]
    cuda = torch.cuda.is_available()
    where = f"{torch.cuda.device_count()} × {torch.cuda.get_device_name(0)}" if cuda else f"CPU, {args.threads} threads"
    print(
        f"data-parallel training (cryoflow.sbi.training.train), {where}: {args.rank_box} px, global batch "
        f"{args.rank_batch}, ResNet width {args.rank_width}, {args.rank_steps} timed steps"
    )
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1] / "src"))
    worker = [__file__, "--worker", *sys.argv[1:]]
    print(f"{'ranks':>5} {'img/s':>9} {'per rank':>9} {'speed-up':>9}")
    base = None
    for count in counts:
        cmd = distributed.launch_command(worker, count) if count > 1 else [sys.executable, *worker]
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
        rate = json.loads(out.split("RESULT ", 1)[1].splitlines()[0])["images_per_s"]
        base = base or rate
        print(f"{count:>5} {rate:>9.1f} {rate / count:>9.1f} {rate / base:>8.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--box", type=int, default=128)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--ranks", help="comma-separated rank counts for the data-parallel table, e.g. 1,2")
    parser.add_argument("--rank-steps", type=int, default=30)
    parser.add_argument("--rank-box", type=int, default=64)
    parser.add_argument("--rank-width", type=int, default=16)
    parser.add_argument("--rank-batch", type=int, default=64)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return rank_worker(args)
    if args.ranks:
        return rank_table(args)
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {args.threads} threads"
    generator = torch.Generator(device=device).manual_seed(0)
    base = torch.randn(1207, 3, generator=torch.Generator().manual_seed(1)) * 15.0
    templates = torch.stack([base * (1 + 0.01 * k) for k in range(-10, 11)])
    pixel = 128.0 / args.box
    priors = Priors(
        theta_range_A=(-10.0, 10.0),
        shift_max_A=5.0,
        snr_range=(0.05, 1.0),
        bead_sigma_range_A=(2.0, 2.0),
        **FIXED_PRIORS,
    )
    atoms = AtomTemplates(templates, torch.linspace(-10, 10, 21), torch.rand(1207) + 0.5, oversample=1, device=device)
    sim = Simulator(atoms, args.box, pixel, priors)
    model, optimizer = new_model(device)
    print(
        f"torch {torch.__version__}, {name}; {args.box} px, batch {args.batch}, 1207 beads, "
        f"estimator {count_parameters(model) / 1e6:.1f} M parameters, {args.steps} timed steps per loop"
    )

    # warm-up: one step of each kind
    train_step(model, optimizer, *sim.sample(args.batch, generator))
    simulate_upstream(sim, 8, generator)
    synchronize(device)

    rows = []
    # on the fly
    t_sim = t_total = 0.0
    start = time.perf_counter()
    for _ in range(args.steps):
        t0 = time.perf_counter()
        with torch.no_grad():
            theta, images = sim.sample(args.batch, generator)
        synchronize(device)
        t_sim += time.perf_counter() - t0
        train_step(model, optimizer, theta, images)
    synchronize(device)
    t_total = time.perf_counter() - start
    rows.append(("on the fly (cryoflow)", t_sim, t_total))

    # upstream: simulate everything on the host first, then batches to the device
    start = time.perf_counter()
    host = torch.device("cpu")
    host_sim = (
        sim
        if device.type == "cpu"
        else Simulator(
            AtomTemplates(templates, torch.linspace(-10, 10, 21), atoms.weights.cpu(), oversample=1),
            args.box,
            pixel,
            priors,
        )
    )
    host_generator = torch.Generator(host).manual_seed(2)
    with torch.no_grad():
        theta_all, images_all = simulate_upstream(host_sim, args.batch * args.steps, host_generator)
    t_sim = time.perf_counter() - start
    for step in range(args.steps):
        batch = slice(step * args.batch, (step + 1) * args.batch)
        train_step(model, optimizer, theta_all[batch].to(device), images_all[batch].to(device))
    synchronize(device)
    t_total = time.perf_counter() - start
    rows.append(("upstream (simulate, then batches)", t_sim, t_total))

    n = args.batch * args.steps
    print(f"{'loop':<34} {'sim img/s':>10} {'steps/s':>8} {'img/s':>8}")
    for label, t_sim, t_total in rows:
        print(f"{label:<34} {n / t_sim:>10.0f} {args.steps / t_total:>8.3f} {n / t_total:>8.1f}")
    print(f"end-to-end ratio, on the fly / upstream: {rows[1][2] / rows[0][2]:.2f}x")


if __name__ == "__main__":
    main()
