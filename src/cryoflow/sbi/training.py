"""Neural posterior estimation with images simulated on the fly.

Each step draws a fresh batch (θ, image) from the prior and the simulator on
the training device and minimizes −log q(θ | image) with AdamW and gradient
clipping. A fixed, seeded validation set is scored every ``validate_every``
steps; the estimator with the lowest validation loss is returned, with the
last state. The budget is ``steps``, or less when ``max_hours`` of wall time
run out first. On CUDA the image embedding runs under bfloat16 autocast
(``mixed_precision``); the flow stays in float32. A model with CTF context
(``train.condition_on_ctf``) gets each image's defocus as well. With ``junk_fraction`` > 0
part of each batch holds no centred particle (``cryoflow.physics.junk``): the flow
learns from the particles only, the model's particle output from all.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from cryoflow.io.fileio import atomic_path
from cryoflow.logs import Progress
from cryoflow.physics import junk
from cryoflow.physics.simulator import Simulator
from cryoflow.sbi import distributed
from cryoflow.sbi.distributed import SINGLE, World
from cryoflow.sbi.models import PosteriorEstimator, memory_format

log = logging.getLogger(__name__)


@dataclass
class TrainingConfig:
    """The ``train`` section of the config and the seed; the schema holds the defaults, not this class."""

    steps: int
    batch_size: int
    learning_rate: float
    weight_decay: float
    clip_grad_norm: float
    lr_schedule: str
    validation_size: int
    validate_every: int
    seed: int
    checkpoint_every: int
    max_hours: float | None
    mixed_precision: bool
    junk_fraction: float


def load_checkpoint(path: Path, fingerprint: str) -> dict | None:
    """The checkpoint at ``path`` if it belongs to this run (same fingerprint), else None."""
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a truncated or foreign file: start fresh rather than fail
        log.warning("ignoring unreadable checkpoint %s (%s)", path, err)
        return None
    if state.get("fingerprint") != fingerprint:
        log.info("checkpoint %s is from another configuration; starting from step 0", path)
        return None
    return state


def save_checkpoint(path: Path, state: dict) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def select_device(requested: str = "auto") -> torch.device:
    """'auto' takes CUDA when present, else the CPU; 'cuda' without a GPU is an error."""
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError("train.device is 'cuda' but no CUDA device is visible")
    device = torch.device(requested)
    log.info("training device: %s (%s), torch %s", device, device_name(device), torch.__version__)
    return device


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU with its thread count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU, {torch.get_num_threads()} threads"


@torch.no_grad()
def mean_negative_log_prob(model, theta, images, batch_size: int = 256, ctf=None) -> float:
    """Mean −log q(θ | image) over a fixed set, in batches, model in eval mode (``ctf``: CTF features (n, F))."""
    was_training = model.training
    model.eval()
    total = 0.0
    for start in range(0, len(theta), batch_size):
        part = slice(start, start + batch_size)
        total += -model.log_prob(theta[part], images[part], None if ctf is None else ctf[part]).sum().item()
    model.train(was_training)
    return total / len(theta)


@torch.no_grad()
def simulated_batch(model: PosteriorEstimator, simulator: Simulator, n: int, generator):
    """θ, images and the model's CTF features (None without CTF context) of ``n`` draws from the prior."""
    theta = simulator.sample_theta(n, generator)
    nuisance = simulator.sample_nuisance(n, generator)
    images = simulator.simulate(theta, generator, nuisance)
    return theta, images, model.ctf_features(nuisance)


def make_validation_set(model: PosteriorEstimator, simulator: Simulator, n: int, seed: int):
    generator = torch.Generator(device=simulator.device).manual_seed(seed + 7919)
    return simulated_batch(model, simulator, n, generator)


class Objective(torch.nn.Module):
    """The loss of one batch as a module's forward, which DistributedDataParallel wraps.

    The flow learns from the particles (the first ``len(theta)`` images), the particle output, where the
    batch holds junk (``is_particle`` given), from all images. Returns (loss, particle loss or None)."""

    def __init__(self, model: PosteriorEstimator, autocast: bool = False):
        super().__init__()
        self.model, self.autocast = model, autocast

    def forward(self, theta, images, ctf=None, is_particle=None):
        model = self.model
        with torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=self.autocast):
            latent = model.embedding(images)
        loss = -model.log_prob_latent(theta, latent[: len(theta)], ctf).mean()
        if is_particle is None:
            return loss, None
        particle_loss = torch.nn.functional.binary_cross_entropy_with_logits(model.particle_logit(latent), is_particle)
        return loss + particle_loss, particle_loss


def optimizer_step(objective, optimizer, clip_grad_norm: float, theta, images, ctf=None, is_particle=None):
    """One optimizer step on one (share of a) batch: (loss, particle loss or None, gradient norm before clipping).

    ``objective`` is an :class:`Objective`, or its DistributedDataParallel wrapper on several ranks."""
    loss, particle_loss = objective(theta, images, ctf, is_particle)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(objective.parameters(), clip_grad_norm)
    optimizer.step()
    return loss, particle_loss, grad_norm


def rank_batch_size(batch_size: int, world: World) -> int:
    """Each rank's share of ``train.batch_size`` (the global batch)."""
    if batch_size % world.size:
        raise ValueError(f"train.batch_size {batch_size} does not split evenly over {world.size} ranks")
    return batch_size // world.size


def distributed_objective(model: PosteriorEstimator, device: torch.device, autocast: bool, world: World):
    """The model's :class:`Objective`, wrapped in DistributedDataParallel with synchronized batch norm
    on several ranks."""
    if world.size == 1:
        return Objective(model, autocast)
    distributed.synchronize_batch_norm(model, device)
    ids = [device.index] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(Objective(model, autocast), device_ids=ids)


def train(
    model: PosteriorEstimator,
    simulator: Simulator,
    config: TrainingConfig,
    checkpoint: str | Path | None = None,
    fingerprint: str = "",
    world: World = SINGLE,
) -> tuple[PosteriorEstimator, list, dict]:
    """Train ``model`` in place; return the best-validation model, the history rows and the last state_dict.

    With ``checkpoint``, the model, optimizer, scheduler, random-generator
    state, best model and history are saved there at validation steps, at
    most every ``checkpoint_every`` steps. A rerun whose ``fingerprint``
    matches resumes after the saved step and ends with the same result as an
    uninterrupted run; another fingerprint starts from step 0.

    On several ranks (``world``, inside a joined process group) every rank
    calls this: each simulates ``batch_size / world.size`` images per step
    from its own stream (``distributed.rank_seed``); rank 0 alone validates
    and writes checkpoints (holding every rank's generator state), and its
    history and models are the run's (the other ranks return an empty history).
    """
    device = simulator.device
    local_batch = rank_batch_size(config.batch_size, world)
    model.to(device, memory_format=memory_format(model, device)).train()
    torch.manual_seed(config.seed)
    generator = torch.Generator(device=device).manual_seed(distributed.rank_seed(config.seed, world.rank))
    if world.main:
        val_theta, val_images, val_ctf = make_validation_set(model, simulator, config.validation_size, config.seed)
    autocast = config.mixed_precision and device.type == "cuda"
    objective = distributed_objective(model, device, autocast, world)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    if config.lr_schedule == "cosine":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=config.steps, eta_min=0.01 * config.learning_rate
        )
    else:
        scheduler = torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0)
    best_loss, best_state, history, start = float("inf"), None, [], 1
    checkpoint = Path(checkpoint) if checkpoint else None
    saved = load_checkpoint(checkpoint, fingerprint) if checkpoint else None
    if saved is not None:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        generator.set_state(saved["generators"][world.rank].to(generator.get_state().device))
        best_loss, best_state, history = saved["best_loss"], saved["best_state"], saved["history"]
        start = saved["step"] + 1
        log.info("resuming from checkpoint %s at step %d", checkpoint, start)
    last_saved = start - 1
    budget_s = 3600.0 * config.max_hours if config.max_hours else None
    progress = Progress(config.steps - start + 1, "train", unit="steps", every_s=15.0, logger=log, budget_s=budget_s)
    running, n_running, t_images, n_images = 0.0, 0, 0.0, 0
    if autocast:
        log.info("mixed precision: bfloat16 autocast for the embedding")
    if world.size > 1:
        log.info(
            "data-parallel training on %d ranks: %d images per rank and step (global batch %d)",
            world.size,
            local_batch,
            config.batch_size,
        )
    deadline = time.monotonic() + budget_s if budget_s else float("inf")
    n_junk = junk.junk_batch_size(local_batch, config.junk_fraction) if model.particle is not None else 0
    is_particle = (torch.arange(local_batch, device=device) < local_batch - n_junk).float() if n_junk else None
    running_particle = 0.0
    if n_junk:
        log.info(
            "junk-aware: %d of %d images per batch hold no centred particle (%s)",
            n_junk * world.size,
            config.batch_size,
            ", ".join(junk.KINDS),
        )
    for step in range(start, config.steps + 1):
        t0 = time.perf_counter()
        with torch.no_grad():
            theta, images, ctf = simulated_batch(model, simulator, local_batch - n_junk, generator)
            if n_junk:
                images = torch.cat([images, junk.junk_images(simulator, n_junk, generator)[0]])
        t_images += time.perf_counter() - t0
        n_images += local_batch
        loss, particle_loss, grad_norm = optimizer_step(
            objective, optimizer, config.clip_grad_norm, theta, images, ctf, is_particle
        )
        scheduler.step()
        running += loss.item()
        n_running += 1
        if n_junk:
            running_particle += particle_loss.item()
        out_of_time = time.monotonic() > deadline
        if config.max_hours:  # every rank stops at the same step
            out_of_time = distributed.any_rank(out_of_time)
        if step % config.validate_every == 0 or step == config.steps or out_of_time:
            running, running_particle = distributed.mean_over_ranks([running, running_particle])
            if world.main:
                val_loss = mean_negative_log_prob(model, val_theta, val_images, ctf=val_ctf)
                row = {
                    "step": step,
                    "train_loss": running / n_running,
                    "val_loss": val_loss,
                    "lr": scheduler.get_last_lr()[0],
                    "grad_norm": float(grad_norm),
                    "sim_images_per_s": world.size * n_images / max(t_images, 1e-9),
                    "steps_per_s": progress.rate,
                }
                if n_junk:  # mean binary cross-entropy of the particle output; the flow's loss stays train_loss's part
                    row["particle_bce"] = running_particle / n_running
                    row["train_loss"] -= row["particle_bce"]
                history.append(row)
                if val_loss < best_loss:
                    best_loss, best_state = val_loss, copy.deepcopy(model.state_dict())
                progress.update(
                    0,
                    step=step,
                    loss=row["train_loss"],
                    val_loss=val_loss,
                    images_per_s=round(progress.rate * config.batch_size),
                )
            running, n_running, running_particle = 0.0, 0, 0.0
            if checkpoint and step - last_saved >= config.checkpoint_every and step < config.steps:
                generators = distributed.gather(generator.get_state())
                if world.main:
                    state = {
                        "fingerprint": fingerprint,
                        "step": step,
                        "world_size": world.size,
                        "model": model.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(),
                        "generators": generators,
                        "best_loss": best_loss,
                        "best_state": best_state,
                        "history": history,
                    }
                    save_checkpoint(checkpoint, state)
                last_saved = step
        progress.update(1)
        if out_of_time:
            log.warning("train.max_hours (%.3g h) reached at step %d of %d", config.max_hours, step, config.steps)
            break
    last_state = copy.deepcopy(model.state_dict())
    if world.main:
        model.load_state_dict(best_state)
        log.info("best validation loss %.4f", best_loss)
    model.eval()
    return model, history, last_state
