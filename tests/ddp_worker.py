"""One rank of the data-parallel tests (tests/test_distributed.py), started by torchrun or alone.

    python tests/ddp_worker.py step OUT                       one optimizer step on this rank's share of a fixed batch
    python tests/ddp_worker.py train OUT CHECKPOINT SETTINGS [FINGERPRINT [WIDTH]]
                                                              a tiny training run (SETTINGS: TrainingConfig as JSON)
    python tests/ddp_worker.py die                            rank 1 raises after its first step
    python tests/ddp_worker.py wait FOLDER                    each rank writes its pid to FOLDER and sleeps

The problem: a shell of beads whose radius is 12 Å + 2θ, 32 px images at 3 Å (test_resume.py trains it on one
rank through ``train``).
"""

import json
import sys

import torch
from simulation_helpers import make_priors

from cryoflow.logs import configure
from cryoflow.physics import junk
from cryoflow.physics.projection import AtomTemplates
from cryoflow.physics.simulator import Simulator
from cryoflow.sbi import distributed, models, training
from cryoflow.sbi.distributed import World


def problem(particle_head: bool, width: int = 8):
    torch.manual_seed(0)
    unit = torch.nn.functional.normalize(torch.randn(40, 3), dim=1)
    theta_A = torch.linspace(-4, 4, 5)
    templates = torch.stack([unit * (12.0 + 2.0 * t) for t in theta_A])
    priors = make_priors(theta_range_A=(-4.0, 4.0), snr_range=(1.0, 4.0), bead_sigma_range_A=(3.0, 3.0))
    sim = Simulator(AtomTemplates(templates, theta_A, torch.ones(40), oversample=1), 32, 3.0, priors)
    model = models.PosteriorEstimator(
        (-4.0, 4.0), latent_dim=8, width=width, transforms=1, hidden_features=(16,), particle_head=particle_head
    )
    return sim, model


def one_step(world: World, out: str) -> None:
    """The same fixed batch of 24 particles and 8 junk images on every rank; each rank steps on its share."""
    sim, model = problem(particle_head=True)
    generator = torch.Generator().manual_seed(11)
    theta, images, _ = training.simulated_batch(model, sim, 24, generator)
    junk_images = junk.junk_images(sim, 8, generator)[0]
    # rank r's share: particles then junk, as training.train lays out a rank's batch
    n, k = 24 // world.size, 8 // world.size
    share = slice(world.rank * n, (world.rank + 1) * n)
    junk_share = slice(world.rank * k, (world.rank + 1) * k)
    local_images = torch.cat([images[share], junk_images[junk_share]])
    is_particle = (torch.arange(n + k) < n).float()
    objective = training.distributed_objective(model, torch.device("cpu"), False, world)
    # SGD: AdamW's first step is lr·sign(g), which turns float noise in a near-zero gradient into ±lr
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    batch = (theta[share], local_images, None, is_particle)
    loss, _, grad_norm = training.optimizer_step(objective, optimizer, 5.0, *batch)
    if world.main:
        torch.save({"state": model.state_dict(), "grad_norm": float(grad_norm)}, out)


def train(world: World, out: str, checkpoint: str, settings: str, fingerprint: str = "f", width: str = "8") -> None:
    sim, model = problem(particle_head=False, width=int(width))
    config = training.TrainingConfig(**json.loads(settings))
    model, history, _ = training.train(
        model, sim, config, checkpoint=checkpoint or None, fingerprint=fingerprint, world=world
    )
    if world.main:
        torch.save(model.state_dict(), out)
        print(json.dumps([row["val_loss"] for row in history]), flush=True)


def die(world: World) -> None:
    distributed.any_rank(False)  # every rank has joined
    if world.rank == 1:
        raise RuntimeError("rank 1 fails on purpose")
    distributed.any_rank(False)  # rank 0 waits here for a rank that never comes


def wait(world: World, folder: str) -> None:
    """A rank that only waits (for the launcher-kill test): its pid in ``folder``/rankN.pid, then 120 s."""
    import os
    import time
    from pathlib import Path

    distributed.any_rank(False)
    Path(folder, f"rank{world.rank}.pid").write_text(str(os.getpid()))
    time.sleep(120)


if __name__ == "__main__":
    world = World.from_env()
    configure(label=f"rank {world.rank}")
    torch.set_num_threads(1)
    distributed.start(world, torch.device("cpu"), timeout_s=120)
    try:
        mode, args = sys.argv[1], sys.argv[2:]
        if mode == "step":
            one_step(world, *args)
        elif mode == "train":
            train(world, *args)
        elif mode == "wait":
            wait(world, *args)
        else:
            die(world)
    finally:
        distributed.stop()
