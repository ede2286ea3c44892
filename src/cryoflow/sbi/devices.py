"""The device a job runs on: its config's ``device`` key (``auto``, ``cpu``, ``cuda``) resolved, and its name."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

import torch

log = logging.getLogger(__name__)

# what says that this job was given GPUs: the CUDA runtime's own mask, or SLURM's for the job or step
GPU_ALLOCATION = ("CUDA_VISIBLE_DEVICES", "SLURM_JOB_GPUS", "SLURM_STEP_GPUS", "SLURM_GPUS_ON_NODE")


def allocated_gpus(env: Mapping[str, str]) -> str | None:
    """The variable (``NAME=value``) that allocated GPUs to this job, None where none did."""
    for name in GPU_ALLOCATION:
        value = env.get(name, "").strip()
        # CUDA_VISIBLE_DEVICES and SLURM's GPU lists hold indices ("0" is one GPU), SLURM_GPUS_ON_NODE a count
        nothing = ("", "0") if name == "SLURM_GPUS_ON_NODE" else ("", "-1", "NoDevFiles")
        if value not in nothing:
            return f"{name}={value}"
    return None


def driver_version() -> str:
    """The NVIDIA kernel driver's version line, where the node has one."""
    path = Path("/proc/driver/nvidia/version")
    return path.read_text().splitlines()[0].strip() if path.is_file() else "no NVIDIA driver found"


def select_device(
    requested: str = "auto", key: str = "train.device", env: Mapping[str, str] | None = None
) -> torch.device:
    """'auto' takes CUDA when present, else the CPU; 'cuda' without a GPU is an error naming ``key``.

    'auto' on a job that was allocated GPUs (CUDA_VISIBLE_DEVICES, SLURM's GPU variables) but cannot use
    them (a CPU-only torch wheel, or a wheel's CUDA newer than the node's driver) is an error too: training
    on the CPU while holding the GPUs for up to a day helps no one."""
    env = os.environ if env is None else env
    available = torch.cuda.is_available()
    if requested == "auto":
        allocation = allocated_gpus(env)
        if allocation and not available:
            built = f"CUDA {torch.version.cuda}" if torch.version.cuda else "the CPU only"
            raise RuntimeError(
                f"{key} is 'auto' and this job was given GPUs ({allocation}), but torch {torch.__version__} "
                f"(built for {built}) cannot use them ({driver_version()}): install a torch wheel whose CUDA "
                f"the driver supports (docs/cluster.md), or set {key}: cpu and ask for no GPU"
            )
        requested = "cuda" if available else "cpu"
    if requested.startswith("cuda") and not available:
        raise RuntimeError(f"{key} is {requested!r} but no CUDA device is visible")
    device = torch.device(requested)
    log.info("device: %s (%s), torch %s", device, device_name(device), torch.__version__)
    return device


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU with its thread count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU, {torch.get_num_threads()} threads"
