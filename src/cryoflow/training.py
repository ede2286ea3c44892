"""Neural posterior estimation with images simulated on the fly.

Each step draws a fresh batch (θ, image) from the prior and the simulator on
the training device and minimizes −log q(θ | image) with AdamW and gradient
clipping. A fixed, seeded validation set is scored every ``validate_every``
steps; the estimator with the lowest validation loss is returned.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass

import torch

from cryoflow.logs import Progress
from cryoflow.models import PosteriorEstimator
from cryoflow.simulator import Simulator

log = logging.getLogger(__name__)


@dataclass
class TrainingConfig:
    steps: int = 1000
    batch_size: int = 256
    learning_rate: float = 3e-4
    weight_decay: float = 1e-2
    clip_grad_norm: float = 5.0
    lr_schedule: str = "cosine"
    validation_size: int = 512
    validate_every: int = 100
    seed: int = 0


def select_device(requested: str = "auto") -> torch.device:
    """'auto' takes CUDA when present, else the CPU; 'cuda' without a GPU is an error."""
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError("train.device is 'cuda' but no CUDA device is visible")
    device = torch.device(requested)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    log.info("training device: %s (%s), torch %s", device, name, torch.__version__)
    return device


@torch.no_grad()
def mean_negative_log_prob(model, theta, images, batch_size: int = 256) -> float:
    """Mean −log q(θ | image) over a fixed set, in batches, model in eval mode."""
    was_training = model.training
    model.eval()
    total = 0.0
    for start in range(0, len(theta), batch_size):
        total += -model.log_prob(theta[start : start + batch_size], images[start : start + batch_size]).sum().item()
    model.train(was_training)
    return total / len(theta)


def make_validation_set(simulator: Simulator, n: int, seed: int):
    generator = torch.Generator(device=simulator.device).manual_seed(seed + 7919)
    return simulator.sample(n, generator)


def train(model: PosteriorEstimator, simulator: Simulator, config: TrainingConfig) -> tuple[PosteriorEstimator, list]:
    """Train ``model`` in place; return the best-validation copy and the history rows."""
    device = simulator.device
    # channels-last convolutions are ~20 % faster on CPU (oneDNN) and suit tensor cores on GPU
    model.to(device, memory_format=torch.channels_last).train()
    torch.manual_seed(config.seed)
    generator = torch.Generator(device=device).manual_seed(config.seed)
    val_theta, val_images = make_validation_set(simulator, config.validation_size, config.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    if config.lr_schedule == "cosine":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=config.steps, eta_min=0.01 * config.learning_rate
        )
    else:
        scheduler = torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0)
    best_loss, best_state, history = float("inf"), None, []
    progress = Progress(config.steps, "train", unit="steps", every_s=15.0, logger=log)
    running, n_running, t_images, n_images = 0.0, 0, 0.0, 0
    for step in range(1, config.steps + 1):
        t0 = time.perf_counter()
        with torch.no_grad():
            theta, images = simulator.sample(config.batch_size, generator)
        t_images += time.perf_counter() - t0
        n_images += config.batch_size
        loss = -model.log_prob(theta, images).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip_grad_norm)
        optimizer.step()
        scheduler.step()
        running += loss.item()
        n_running += 1
        if step % config.validate_every == 0 or step == config.steps:
            val_loss = mean_negative_log_prob(model, val_theta, val_images)
            row = {
                "step": step,
                "train_loss": running / n_running,
                "val_loss": val_loss,
                "lr": scheduler.get_last_lr()[0],
                "grad_norm": float(grad_norm),
                "sim_images_per_s": n_images / max(t_images, 1e-9),
                "steps_per_s": progress.rate,
            }
            history.append(row)
            running, n_running = 0.0, 0
            if val_loss < best_loss:
                best_loss, best_state = val_loss, copy.deepcopy(model.state_dict())
            progress.update(0, loss=row["train_loss"], val_loss=val_loss)
        progress.update(1)
    model.load_state_dict(best_state)
    model.eval()
    log.info("best validation loss %.4f", best_loss)
    return model, history
