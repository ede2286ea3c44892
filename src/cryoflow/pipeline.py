"""Build package objects from the workflow's config sections (one place that knows the keys)."""

from __future__ import annotations

import numpy as np

from cryoflow.models import PosteriorEstimator
from cryoflow.simulator import Priors, Simulator
from cryoflow.training import TrainingConfig


def load_ensemble(path) -> dict[str, np.ndarray]:
    with np.load(path) as data:
        return {key: data[key] for key in data.files}


def build_priors(sim_cfg: dict, theta_range_A) -> Priors:
    return Priors(
        theta_range_A=(float(theta_range_A[0]), float(theta_range_A[1])),
        shift_max_A=sim_cfg["shift_max_A"],
        defocus_range_A=tuple(sim_cfg["defocus_range_A"]),
        astigmatism_max_A=sim_cfg["astigmatism_max_A"],
        b_factor_range_A2=tuple(sim_cfg["b_factor_range_A2"]),
        snr_range=tuple(sim_cfg["snr_range"]),
        amplitude_contrast=sim_cfg["amplitude_contrast"],
        voltage_kV=sim_cfg["voltage_kV"],
        cs_mm=sim_cfg["cs_mm"],
        bead_sigma_A=sim_cfg["bead_sigma_A"],
        mask_radius_A=sim_cfg["mask_radius_A"],
    )


def build_simulator(ensemble: dict, config: dict, box_px=None, pixel_size_A=None, device="cpu") -> Simulator:
    """Simulator on the training grid (or another grid, for the demo particles)."""
    theta = ensemble["theta_A"]
    priors = build_priors(config["simulator"], (theta[0], theta[-1]))
    return Simulator(
        ensemble["coords_A"],
        theta,
        ensemble["weights"],
        box_px or config["image"]["box_px"],
        pixel_size_A or config["image"]["pixel_size_A"],
        priors,
        device=device,
        oversample=config["simulator"]["oversample"],
    )


def build_model(ensemble: dict, train_cfg: dict) -> PosteriorEstimator:
    theta = ensemble["theta_A"]
    return PosteriorEstimator(
        (float(theta[0]), float(theta[-1])),
        latent_dim=train_cfg["embedding"]["latent_dim"],
        width=train_cfg["embedding"]["width"],
        transforms=train_cfg["flow"]["transforms"],
        hidden_features=tuple(train_cfg["flow"]["hidden_features"]),
    )


def training_config(train_cfg: dict, seed: int) -> TrainingConfig:
    keys = ("steps", "batch_size", "learning_rate", "weight_decay", "clip_grad_norm", "lr_schedule",
            "validation_size", "validate_every", "checkpoint_every")  # fmt: skip
    return TrainingConfig(seed=seed, **{k: train_cfg[k] for k in keys})
