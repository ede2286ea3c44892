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
from dataclasses import dataclass, field
from pathlib import Path

import torch

from cryoflow.chunks import chunks
from cryoflow.io.fileio import atomic_path
from cryoflow.logs import Progress
from cryoflow.physics import junk
from cryoflow.physics.simulator import Simulator
from cryoflow.sbi import distributed
from cryoflow.sbi.distributed import SINGLE, World
from cryoflow.sbi.models import PosteriorEstimator, memory_format

log = logging.getLogger(__name__)
DEADLINE_EVERY = 10  # steps between the ranks' joint check of train.max_hours


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


@torch.no_grad()
def mean_negative_log_prob(model, theta, images, batch_size: int = 256, ctf=None) -> float:
    """Mean −log q(θ | image) over a fixed set, in batches, model in eval mode (``ctf``: CTF features (n, F))."""
    was_training = model.training
    model.eval()
    total = 0.0
    for part in chunks(len(theta), batch_size):
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
    # no buffer broadcast each step: batch norm's running statistics come from the global batch on every rank
    # already, and the flow's masks never change
    objective = Objective(model, autocast)
    return torch.nn.parallel.DistributedDataParallel(objective, device_ids=ids, broadcast_buffers=False)


def bf16_autocast(mixed_precision: bool, device: torch.device) -> bool:
    """Whether the embedding runs under bfloat16 autocast: ``train.mixed_precision`` on a CUDA device with
    native bfloat16 (Ampere and later); a V100 or T4 emulates it slowly, so it trains in float32 there."""
    if not (mixed_precision and device.type == "cuda"):
        return False
    if not torch.cuda.is_bf16_supported(including_emulation=False):
        log.warning(
            "train.mixed_precision: %s has no native bfloat16; training in float32", torch.cuda.get_device_name(device)
        )
        return False
    return True


@dataclass
class TrainingState:
    """What a training run carries from step to step, and what a checkpoint holds of it.

    ``step`` is the last step taken; ``best_state`` the model's weights at the lowest validation loss so far.
    ``checkpoint``/``resume`` are the round trip through a checkpoint file's dict.
    """

    model: PosteriorEstimator
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    generator: torch.Generator
    step: int = 0
    best_loss: float = float("inf")
    best_state: dict | None = None
    history: list[dict] = field(default_factory=list)

    def checkpoint(self, fingerprint: str, generators: list, world_size: int) -> dict:
        """The checkpoint's contents: this state with every rank's generator state (``generators``)."""
        return {
            "fingerprint": fingerprint,
            "step": self.step,
            "world_size": world_size,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "generators": generators,
            "best_loss": self.best_loss,
            "best_state": self.best_state,
            "history": self.history,
        }

    def resume(self, saved: dict, rank: int) -> None:
        """Continue from a checkpoint's contents (``checkpoint``'s output), as rank ``rank``."""
        self.model.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        self.generator.set_state(saved["generators"][rank].to(self.generator.get_state().device))
        self.step, self.best_loss = saved["step"], saved["best_loss"]
        self.best_state, self.history = saved["best_state"], saved["history"]

    def record_validation(self, row: dict) -> None:
        self.history.append(row)
        if row["val_loss"] < self.best_loss:
            self.best_loss, self.best_state = row["val_loss"], copy.deepcopy(self.model.state_dict())


@dataclass
class Running:
    """Sums since the last validation (losses) and since the start (simulation throughput)."""

    loss: float | torch.Tensor = 0.0  # summed on the device between validations (no host sync per step)
    particle_loss: float | torch.Tensor = 0.0
    n_steps: int = 0
    sim_seconds: float = 0.0
    sim_images: int = 0

    def reset_losses(self) -> None:
        self.loss, self.particle_loss, self.n_steps = 0.0, 0.0, 0


@dataclass(frozen=True)
class BatchPlan:
    """One rank's batch: ``size`` images per step, the last ``n_junk`` of them junk (``is_particle`` marks the
    rest; None without junk)."""

    size: int
    n_junk: int
    is_particle: torch.Tensor | None

    @classmethod
    def make(cls, model: PosteriorEstimator, config: TrainingConfig, world: World, device: torch.device) -> BatchPlan:
        size = rank_batch_size(config.batch_size, world)
        n_junk = junk.junk_batch_size(size, config.junk_fraction) if model.particle is not None else 0
        is_particle = (torch.arange(size, device=device) < size - n_junk).float() if n_junk else None
        return cls(size, n_junk, is_particle)

    @torch.no_grad()
    def draw(self, model: PosteriorEstimator, simulator: Simulator, generator: torch.Generator):
        """(θ of the particles, every image, the particles' CTF features or None)."""
        theta, images, ctf = simulated_batch(model, simulator, self.size - self.n_junk, generator)
        if self.n_junk:
            images = torch.cat([images, junk.junk_images(simulator, self.n_junk, generator)[0]])
        return theta, images, ctf


def learning_rate_schedule(optimizer: torch.optim.Optimizer, config: TrainingConfig):
    """``train.lr_schedule``: cosine down to 1 % of the learning rate over ``steps``, or constant."""
    if config.lr_schedule == "cosine":
        floor = 0.01 * config.learning_rate
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.steps, eta_min=floor)
    return torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0)


def resume_from(state: TrainingState, checkpoint: Path | None, fingerprint: str, world: World) -> None:
    saved = load_checkpoint(checkpoint, fingerprint) if checkpoint else None
    if saved is not None:
        state.resume(saved, world.rank)
        log.info("resuming from checkpoint %s at step %d", checkpoint, state.step + 1)


def log_set_up(autocast: bool, plan: BatchPlan, config: TrainingConfig, world: World) -> None:
    if autocast:
        log.info("mixed precision: bfloat16 autocast for the embedding")
    if world.size > 1:
        log.info(
            "data-parallel training on %d ranks: %d images per rank and step (global batch %d)",
            world.size,
            plan.size,
            config.batch_size,
        )
    if plan.n_junk:
        log.info(
            "junk-aware: %d of %d images per batch hold no centred particle (%s)",
            plan.n_junk * world.size,
            config.batch_size,
            ", ".join(junk.KINDS),
        )


def train(
    model: PosteriorEstimator,
    simulator: Simulator,
    config: TrainingConfig,
    checkpoint: str | Path | None = None,
    fingerprint: str = "",
    world: World = SINGLE,
) -> tuple[PosteriorEstimator, list, dict]:
    """Train ``model`` in place; return the best-validation model, the history rows and the last state_dict.

    With ``checkpoint``, the :class:`TrainingState` (model, optimizer,
    scheduler, random-generator state, best model and history) is saved there
    at validation steps, at most every ``checkpoint_every`` steps. A rerun
    whose ``fingerprint`` matches resumes after the saved step and ends with
    the same result as an uninterrupted run; another fingerprint starts from step 0.

    On several ranks (``world``, inside a joined process group) every rank
    calls this: each simulates ``batch_size / world.size`` images per step
    from its own stream (``distributed.rank_seed``); rank 0 alone validates
    and writes checkpoints (holding every rank's generator state), and its
    history and models are the run's (the other ranks return an empty history).
    """
    device = simulator.device
    plan = BatchPlan.make(model, config, world, device)
    model.to(device, memory_format=memory_format(model, device)).train()  # type: ignore[call-overload]  # torch's stubs omit Module.to(memory_format=)
    torch.manual_seed(config.seed)
    generator = torch.Generator(device=device).manual_seed(distributed.rank_seed(config.seed, world.rank))
    validation_set = make_validation_set(model, simulator, config.validation_size, config.seed) if world.main else None
    autocast = bf16_autocast(config.mixed_precision, device)
    objective = distributed_objective(model, device, autocast, world)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    state = TrainingState(model, optimizer, learning_rate_schedule(optimizer, config), generator)
    checkpoint = Path(checkpoint) if checkpoint else None
    resume_from(state, checkpoint, fingerprint, world)
    log_set_up(autocast, plan, config, world)
    loop = TrainingLoop(state, objective, plan, simulator, config, world, validation_set)
    loop.run(checkpoint, fingerprint)
    last_state = copy.deepcopy(model.state_dict())
    if world.main:
        assert state.best_state is not None  # the last step validates
        model.load_state_dict(state.best_state)
        log.info("best validation loss %.4f", state.best_loss)
    model.eval()
    return model, state.history, last_state


class TrainingLoop:
    """The steps of one run around its :class:`TrainingState`: simulate and step, validate, checkpoint, stop."""

    def __init__(self, state, objective, plan, simulator, config: TrainingConfig, world: World, validation_set):
        self.state, self.objective, self.plan, self.simulator = state, objective, plan, simulator
        self.config, self.world, self.validation_set = config, world, validation_set
        self.running = Running()
        budget_s = 3600.0 * config.max_hours if config.max_hours else None
        steps_left = config.steps - state.step
        self.progress = Progress(steps_left, "train", unit="steps", every_s=15.0, logger=log, budget_s=budget_s)
        self.deadline = time.monotonic() + budget_s if budget_s else float("inf")

    def run(self, checkpoint: Path | None, fingerprint: str) -> None:
        config, state = self.config, self.state
        last_saved = state.step
        for step in range(state.step + 1, config.steps + 1):
            grad_norm = self.take_step()
            state.step = step
            out_of_time = self.out_of_time(step)
            if step % config.validate_every == 0 or step == config.steps or out_of_time:
                self.validate(grad_norm)
                if checkpoint and step - last_saved >= config.checkpoint_every and step < config.steps:
                    self.save(checkpoint, fingerprint)
                    last_saved = step
            self.progress.update(1)
            if out_of_time:
                log.warning("train.max_hours (%.3g h) reached at step %d of %d", config.max_hours, step, config.steps)
                break

    def out_of_time(self, step: int) -> bool:
        """Whether ``train.max_hours`` ran out: every step on one rank; on several, every ``DEADLINE_EVERY``
        steps (and the last), taken by all ranks together (a collective, so not every step)."""
        if not self.config.max_hours:
            return False
        if self.world.size > 1 and step % DEADLINE_EVERY and step != self.config.steps:
            return False
        return distributed.any_rank(time.monotonic() > self.deadline)  # every rank stops at the same step

    def take_step(self) -> torch.Tensor:
        """Simulate this rank's batch and take one optimizer step; returns the gradient norm."""
        state, running = self.state, self.running
        t0 = time.perf_counter()
        theta, images, ctf = self.plan.draw(state.model, self.simulator, state.generator)
        running.sim_seconds += time.perf_counter() - t0
        running.sim_images += self.plan.size
        loss, particle_loss, grad_norm = optimizer_step(
            self.objective, state.optimizer, self.config.clip_grad_norm, theta, images, ctf, self.plan.is_particle
        )
        state.scheduler.step()
        running.loss = running.loss + loss.detach().double()
        running.n_steps += 1
        if self.plan.n_junk:
            running.particle_loss = running.particle_loss + particle_loss.detach().double()
        return grad_norm

    def validate(self, grad_norm: torch.Tensor) -> None:
        """Score the validation set on rank 0 and add a history row (losses averaged over the ranks)."""
        state, running = self.state, self.running
        sums = [float(running.loss), float(running.particle_loss)]  # the one host sync of a validation interval
        running.loss, running.particle_loss = distributed.mean_over_ranks(sums)
        if self.world.main:
            val_theta, val_images, val_ctf = self.validation_set
            row = {
                "step": state.step,
                "train_loss": running.loss / running.n_steps,
                "val_loss": mean_negative_log_prob(state.model, val_theta, val_images, ctf=val_ctf),
                "lr": state.scheduler.get_last_lr()[0],
                "grad_norm": float(grad_norm),
                "sim_images_per_s": self.world.size * running.sim_images / max(running.sim_seconds, 1e-9),
                "steps_per_s": self.progress.rate,
            }
            if self.plan.n_junk:  # mean binary cross-entropy of the particle output; the flow's loss stays train_loss
                row["particle_bce"] = running.particle_loss / running.n_steps
                row["train_loss"] -= row["particle_bce"]
            state.record_validation(row)
            images_per_s = round(self.progress.rate * self.config.batch_size)
            self.progress.update(
                0, step=state.step, loss=row["train_loss"], val_loss=row["val_loss"], images_per_s=images_per_s
            )
        running.reset_losses()

    def save(self, checkpoint: Path, fingerprint: str) -> None:
        """Every rank's generator state to rank 0, which writes the checkpoint."""
        generators = distributed.gather(self.state.generator.get_state())
        if self.world.main:
            save_checkpoint(checkpoint, self.state.checkpoint(fingerprint, generators, self.world.size))
