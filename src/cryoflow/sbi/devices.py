"""The device a job runs on: the config's ``device`` key (``auto``, ``cpu``, ``cuda``) resolved, and its name."""

from __future__ import annotations

import logging

import torch

log = logging.getLogger(__name__)


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
