"""Build package objects from the workflow's config sections (one place that knows the keys)."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import numpy as np
import pandas as pd

from cryoflow.errors import InputError
from cryoflow.physics.projection import AtomTemplates, VolumeTemplates
from cryoflow.physics.rasterize import map_bead_sigma_A, read_map
from cryoflow.physics.simulator import Priors, Simulator, noise_filter
from cryoflow.physics.theta import range_of
from cryoflow.sbi.models import PosteriorEstimator, ctf_context_from_priors
from cryoflow.sbi.training import TrainingConfig


def load_ensemble(path) -> dict[str, np.ndarray]:
    with np.load(path) as data:
        return {key: data[key] for key in data.files}


def resolve_priors(sim_cfg: dict, theta_range_A, star_found: dict | None = None) -> dict[str, Any]:
    """The simulator's priors as plain values: the config's, with what a STAR file holds taking precedence.

    ``theta_range_A`` is [low, high] or, for a 2-D θ, two such pairs (``cryoflow.physics.theta.range_of``).
    """
    sigma = sim_cfg["bead_sigma_A"]
    sigma_range = [float(sigma), float(sigma)] if isinstance(sigma, (int, float)) else [float(v) for v in sigma]
    priors = {
        "theta_range_A": np.asarray(theta_range_A, dtype=float).tolist(),
        "shift_max_A": sim_cfg["shift_max_A"],
        "pose_max_angle_deg": sim_cfg["pose_max_angle_deg"],
        "defocus_range_A": list(sim_cfg["defocus_range_A"]),
        "astigmatism_max_A": sim_cfg["astigmatism_max_A"],
        "phase_shift_range_deg": list(sim_cfg["phase_shift_range_deg"]),
        "b_factor_range_A2": list(sim_cfg["b_factor_range_A2"]),
        "snr_range": list(sim_cfg["snr_range"]),
        "bead_sigma_range_A": sigma_range,
        "mask_radius_A": sim_cfg["mask_radius_A"],
        "optics": [
            {
                "voltage_kV": sim_cfg["voltage_kV"],
                "cs_mm": sim_cfg["cs_mm"],
                "amplitude_contrast": sim_cfg["amplitude_contrast"],
                "weight": 1.0,
            }
        ],
    }
    for key, value in (star_found or {}).items():
        if key in priors:
            priors[key] = value
    return priors


def priors_from_dict(values: dict, where: str = "priors") -> Priors:
    """``Priors`` from their plain values (``priors.json``, a model card's ``priors``); every field is needed."""
    names = [f.name for f in dataclasses.fields(Priors)]
    missing = [name for name in names if name not in values]
    if missing:
        raise InputError(f"{where}: no {', '.join(missing)} (written by another version of cryoflow?)")
    tuples = {k: tuple(v) for k, v in values.items() if isinstance(v, list) and k != "optics"}
    return Priors(**{k: v for k, v in {**values, **tuples}.items() if k in names})


def load_volumes(paths) -> tuple[np.ndarray, float]:
    """Template maps (T, N, N, N) and their common voxel size in Å."""
    maps, voxel_sizes = zip(*(read_map(p) for p in paths))
    if len({m.shape for m in maps}) != 1 or np.ptp(voxel_sizes) > 1e-4:
        raise InputError(f"template maps differ in box or voxel size: {paths[0]} ... {paths[-1]}")
    return np.stack(maps), float(voxel_sizes[0])


def build_simulator(
    ensemble: dict,
    config: dict,
    priors: Priors,
    box_px=None,
    pixel_size_A=None,
    device="cpu",
    volume_paths=None,
    noise_power: tuple[np.ndarray, np.ndarray] | None = None,
    projection: str | None = None,
) -> Simulator:
    """Simulator on the training grid (or another grid, for the demo particles).

    Atomic templates come from the ensemble; with ``simulator.projection:
    volumes`` (or ``projection="volumes"``) the maps ``volume_paths`` are projected instead.
    ``noise_power`` = (frequency_per_A, power) colours the noise.
    """
    sim_cfg = config["simulator"]
    theta = ensemble["theta_A"]
    templates: VolumeTemplates | AtomTemplates
    if (projection or sim_cfg["projection"]) == "volumes":
        volumes, voxel_size = load_volumes(volume_paths)
        templates = VolumeTemplates(
            volumes,
            theta,
            voxel_size,
            sim_cfg["volume_oversample"],
            device=device,
            map_sigma_A=map_bead_sigma_A(sim_cfg["bead_sigma_A"]),
        )
    else:
        templates = AtomTemplates(
            ensemble["coords_A"], theta, ensemble["weights"], sim_cfg["oversample"], device=device
        )
    box = box_px or config["image"]["box_px"]
    pixel = pixel_size_A or config["image"]["pixel_size_A"]
    colour = None
    if noise_power is not None:
        frequency_per_A, power = noise_power
        colour = noise_filter(box, pixel, frequency_per_A, power, device=device)
    return Simulator(templates, box, pixel, priors, noise_filter=colour)


def read_noise_power(path) -> tuple[np.ndarray, np.ndarray]:
    """(frequency_per_A, noise_power) from a TSV such as the particle stage's ``noise_power.tsv`` (first group)."""
    table = pd.read_csv(path, sep="\t")
    missing = {"frequency_per_A", "noise_power"} - set(table.columns)
    if missing:
        raise InputError(f"{path}: column(s) {sorted(missing)} missing (simulator.noise_power_tsv)")
    if "optics_group" in table.columns and len(table):
        table = table[table["optics_group"] == table["optics_group"].iloc[0]]
    if len(table) < 2:
        raise InputError(f"{path}: fewer than two rows of frequency_per_A and noise_power (simulator.noise_power_tsv)")
    return table["frequency_per_A"].to_numpy(float), table["noise_power"].to_numpy(float)


def load_simulator(inputs, config: dict, device="cpu", box_px=None, pixel_size_A=None) -> Simulator:
    """The simulator of a rule whose inputs are ``simulator_inputs`` (ensemble, priors, maps, noise)."""
    with open(inputs.priors) as handle:
        priors = priors_from_dict(json.load(handle), str(inputs.priors))
    noise = getattr(inputs, "noise", None)
    return build_simulator(
        load_ensemble(inputs.ensemble),
        config,
        priors,
        box_px=box_px,
        pixel_size_A=pixel_size_A,
        device=device,
        volume_paths=getattr(inputs, "maps", None),
        noise_power=read_noise_power(noise) if noise else None,
    )


def demo_simulator(ensemble_path, config: dict, demo_cfg: dict, device="cpu") -> Simulator:
    """The simulator of a demo data set: the templates' atoms on the demo's own grid, the config's priors."""
    ensemble = load_ensemble(ensemble_path)
    priors = priors_from_dict(resolve_priors(config["simulator"], range_of(ensemble["theta_A"])))
    grid = {"box_px": demo_cfg["box_px"], "pixel_size_A": demo_cfg["pixel_size_A"]}
    return build_simulator(ensemble, config, priors, **grid, device=device, projection="atoms")


def build_model(ensemble: dict, train_cfg: dict, priors: Priors | None = None) -> PosteriorEstimator:
    """The estimator a ``train`` section describes; ``train.condition_on_ctf`` takes its CTF ranges from ``priors``."""
    ctf_context = None
    if train_cfg["condition_on_ctf"]:
        if priors is None:
            raise ValueError("train.condition_on_ctf needs the simulator's priors")
        ctf_context = ctf_context_from_priors(priors)
    return PosteriorEstimator(
        range_of(ensemble["theta_A"]),
        latent_dim=train_cfg["embedding"]["latent_dim"],
        width=train_cfg["embedding"]["width"],
        transforms=train_cfg["flow"]["transforms"],
        hidden_features=tuple(train_cfg["flow"]["hidden_features"]),
        particle_head=train_cfg["junk_fraction"] > 0,
        ctf_context=ctf_context,
        crop_px=train_cfg["embedding"]["crop_px"],
    )


def training_config(train_cfg: dict, seed: int) -> TrainingConfig:
    keys = (
        "steps",
        "batch_size",
        "learning_rate",
        "weight_decay",
        "clip_grad_norm",
        "lr_schedule",
        "validation_size",
        "validate_every",
        "checkpoint_every",
        "max_hours",
        "mixed_precision",
        "junk_fraction",
    )
    return TrainingConfig(seed=seed, **{k: train_cfg[k] for k in keys})
