"""Neural posterior estimation with images simulated on the fly.

Each step draws a fresh batch (θ, image) from the prior and the simulator on
the training device and minimizes −log q(θ | image) with AdamW and gradient
clipping. A fixed, seeded validation set is scored every ``validate_every``
steps; the estimator with the lowest validation loss is returned, with the
last state. The budget is ``steps``, or less when ``max_hours`` of wall time
run out first. On CUDA the image embedding runs under bfloat16 autocast
(``mixed_precision``); the flow stays in float32. A model with CTF context
(``train.condition_on_ctf``) gets each image's defocus as well. With ``junk_fraction`` > 0
part of each batch holds no centred particle (``cryoflow.junk``): the flow
learns from the particles only, the model's particle output from all.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from cryoflow import junk
from cryoflow.fileio import atomic_path
from cryoflow.logs import Progress
from cryoflow.models import PosteriorEstimator, memory_format
from cryoflow.simulator import Simulator

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


def train(
    model: PosteriorEstimator,
    simulator: Simulator,
    config: TrainingConfig,
    checkpoint: str | Path | None = None,
    fingerprint: str = "",
) -> tuple[PosteriorEstimator, list, dict]:
    """Train ``model`` in place; return the best-validation model, the history rows and the last state_dict.

    With ``checkpoint``, the model, optimizer, scheduler, random-generator
    state, best model and history are saved there at validation steps, at
    most every ``checkpoint_every`` steps. A rerun whose ``fingerprint``
    matches resumes after the saved step and ends with the same result as an
    uninterrupted run; another fingerprint starts from step 0.
    """
    device = simulator.device
    model.to(device, memory_format=memory_format(model, device)).train()
    torch.manual_seed(config.seed)
    generator = torch.Generator(device=device).manual_seed(config.seed)
    val_theta, val_images, val_ctf = make_validation_set(model, simulator, config.validation_size, config.seed)
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
        generator.set_state(saved["generator"].to(generator.get_state().device))
        best_loss, best_state, history = saved["best_loss"], saved["best_state"], saved["history"]
        start = saved["step"] + 1
        log.info("resuming from checkpoint %s at step %d", checkpoint, start)
    last_saved = start - 1
    progress = Progress(config.steps - start + 1, "train", unit="steps", every_s=15.0, logger=log)
    running, n_running, t_images, n_images = 0.0, 0, 0.0, 0
    autocast = config.mixed_precision and device.type == "cuda"
    if autocast:
        log.info("mixed precision: bfloat16 autocast for the embedding")
    deadline = time.monotonic() + 3600.0 * config.max_hours if config.max_hours else float("inf")
    n_junk = junk.junk_batch_size(config.batch_size, config.junk_fraction) if model.particle is not None else 0
    is_particle = (torch.arange(config.batch_size, device=device) < config.batch_size - n_junk).float()
    running_particle = 0.0
    if n_junk:
        log.info("junk-aware: %d of %d images per batch hold no centred particle (%s)", n_junk, config.batch_size,
                 ", ".join(junk.KINDS))  # fmt: skip
    for step in range(start, config.steps + 1):
        t0 = time.perf_counter()
        with torch.no_grad():
            theta, images, ctf = simulated_batch(model, simulator, config.batch_size - n_junk, generator)
            if n_junk:
                images = torch.cat([images, junk.junk_images(simulator, n_junk, generator)[0]])
        t_images += time.perf_counter() - t0
        n_images += config.batch_size
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            latent = model.embedding(images)
        loss = -model.log_prob_latent(theta, latent[: len(theta)], ctf).mean()
        if n_junk:  # the flow learns from particles only; the particle output from all
            logit = model.particle_logit(latent)
            particle_loss = torch.nn.functional.binary_cross_entropy_with_logits(logit, is_particle)
            loss = loss + particle_loss
            running_particle += particle_loss.item()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip_grad_norm)
        optimizer.step()
        scheduler.step()
        running += loss.item()
        n_running += 1
        out_of_time = time.monotonic() > deadline
        if step % config.validate_every == 0 or step == config.steps or out_of_time:
            val_loss = mean_negative_log_prob(model, val_theta, val_images, ctf=val_ctf)
            row = {
                "step": step,
                "train_loss": running / n_running,
                "val_loss": val_loss,
                "lr": scheduler.get_last_lr()[0],
                "grad_norm": float(grad_norm),
                "sim_images_per_s": n_images / max(t_images, 1e-9),
                "steps_per_s": progress.rate,
            }
            if n_junk:  # mean binary cross-entropy of the particle output; the flow's loss stays train_loss's part
                row["particle_bce"] = running_particle / n_running
                row["train_loss"] -= row["particle_bce"]
                running_particle = 0.0
            history.append(row)
            running, n_running = 0.0, 0
            if val_loss < best_loss:
                best_loss, best_state = val_loss, copy.deepcopy(model.state_dict())
            progress.update(0, step=step, loss=row["train_loss"], val_loss=val_loss,
                            images_per_s=round(progress.rate * config.batch_size))  # fmt: skip
            if checkpoint and step - last_saved >= config.checkpoint_every and step < config.steps:
                state = {
                    "fingerprint": fingerprint,
                    "step": step,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "generator": generator.get_state(),
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
    model.load_state_dict(best_state)
    model.eval()
    log.info("best validation loss %.4f", best_loss)
    return model, history, last_state
