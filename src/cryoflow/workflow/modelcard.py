"""What a model must share with the config that uses it: the template recipe (structure and templates
section) a card records, and the check that a model trained elsewhere (``model.trained``) fits this config.

Standard library only (the DAG side); ``cryoflow.sbi.models.check_card`` checks the card again at load."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TypedDict, cast

from cryoflow.errors import ConfigError
from cryoflow.io.fileio import sha256_files
from cryoflow.io.structure_text import is_pdb_id

# train keys added after models were trained, with the value those models were trained with: the train
# rule's params leave a key out while it has that value (configuration.train_params), so an upgrade does not
# retrain them, and the train job puts it back (trainjob.TrainJob.train). Equal to the schema's defaults
# (tests/test_workflow.py holds them so). A dotted key names one inside a sub-section.
TRAIN_ADDED = {"condition_on_ctf": False, "processes": 1, "nodes": 1, "embedding.crop_px": None}


def without_added(train: dict) -> dict:
    """``train`` less the ``TRAIN_ADDED`` keys that hold their old value (the train rule's params)."""
    out = _sections_copied(train)
    for dotted, old in TRAIN_ADDED.items():
        node, leaf = _parent(out, dotted)
        if leaf in node and node[leaf] == old:
            del node[leaf]
    return out


def with_added(train: dict) -> dict:
    """``train`` with the ``TRAIN_ADDED`` keys it lacks put back at their old value."""
    out = _sections_copied(train)
    for dotted, old in TRAIN_ADDED.items():
        node, leaf = _parent(out, dotted)
        node.setdefault(leaf, old)
    return out


def _sections_copied(train: dict) -> dict:
    return {key: dict(value) if isinstance(value, dict) else value for key, value in train.items()}


def _parent(train: dict, dotted: str) -> tuple[dict, str]:
    """The section that holds a dotted key (created where missing), and the key's last part."""
    *parents, leaf = dotted.split(".")
    node = train
    for key in parents:
        node = node.setdefault(key, {})
    return node, leaf


class ModelCard(TypedDict, total=False):
    """``model/card.json``: what a trained model is, what it was trained on and how the training went.

    Written once by the train rule (``cryoflow.sbi.trainjob``); read at ``-n`` (``check_trained_model``),
    at load (``cryoflow.sbi.models.check_card``) and by the reports. ``weights_sha256`` ties the card to
    its weights; ``weights`` is "last step" on the card saved inside ``last.pt``.
    """

    model: str
    cryoflow_version: str  # the release that trained it (cryoflow.__version__)
    architecture: dict[str, Any]  # PosteriorEstimator's constructor arguments (theta_range_A, widths, ...)
    parameters: int
    name: str
    seed: int
    config: dict[str, Any]  # image, simulator and train sections as trained
    template_recipe: dict[str, Any]  # template_recipe() of the training config
    priors: dict[str, Any]  # the simulator's Priors as plain values
    checksums_sha256: dict[str, str]  # ensemble, maps/noise where used, training_code
    template_theta_A: list[float]
    packages: dict[str, str]
    python: str
    device: str
    world_size: int
    steps_run: int
    steps_planned: int
    best_step: int
    best_val_loss: float
    final_train_loss: float
    final_val_loss: float
    uniform_prior_loss: float
    wall_time_s: float
    sim_images_per_s: float
    steps_per_s: float
    weights_sha256: str
    weights: str


# how far (a share of the prior's width) a particle's CTF may lie outside a CTF-conditioned model's prior
CTF_PRIOR_TOLERANCE = 0.02


def read_card(path: Path) -> dict | None:
    """A card's JSON object, None where the file is absent; a ConfigError for one that is not a card."""
    if not path.is_file():
        return None
    try:
        card = json.loads(path.read_text())
    except ValueError as err:
        raise ConfigError(f"{path} is not JSON ({err})") from None
    if not isinstance(card, dict):
        raise ConfigError(f"{path} holds {type(card).__name__}, not a model card (an object)")
    return card


def ctf_conditioning(cfg: dict) -> tuple[bool, tuple[float, float] | None]:
    """Whether the model the datasets are inferred with is CTF-conditioned, and its mean-defocus prior (Å):
    the card's for ``model.trained`` (its training config, not this one, decides), else this config's
    ``simulator.defocus_range_A``, or None where the priors come from a dataset's STAR file (known only once
    the priors job ran)."""
    if cfg["model"]["trained"]:
        card = read_card(Path(cfg["model"]["trained"]).with_name("card.json")) or {}
        context = card.get("architecture", {}).get("ctf_context")
        if not context:
            return False, None
        if "defocus_A" not in context.get("features", []):
            return True, None
        k = context["features"].index("defocus_A")
        return True, (float(context["low"][k]), float(context["high"][k]))
    if not cfg["train"]["condition_on_ctf"]:
        return False, None
    if cfg["simulator"]["priors_from_dataset"] is not None:
        return True, None
    low, high = cfg["simulator"]["defocus_range_A"]
    return True, (float(low), float(high))


def check_own_model(model_dir: str | Path) -> None:
    """The workflow's own model, where an earlier run left one: its weights must be the ones its card names
    (a truncated or replaced ``posterior.pt`` would make every job after it fail)."""
    model, card_path = Path(model_dir) / "posterior.pt", Path(model_dir) / "card.json"
    card = read_card(card_path)
    if card is None or not model.is_file() or "weights_sha256" not in card:
        return
    if sha256_files(model) != card["weights_sha256"]:
        raise ConfigError(
            f"{model} does not match the field 'weights_sha256' of {card_path} (truncated or replaced?): "
            f"delete {Path(model_dir)} to train it again"
        )


def template_recipe(cfg: dict) -> dict:
    """What fixes the templates: the structure (file content, or PDB id) and the templates section."""
    structure = cfg["structure"]
    source = structure["source"]
    recipe = {
        "structure": {
            "source": source if is_pdb_id(source) else sha256_files(source),
            "chains": structure["chains"],
            "beads": structure["beads"],
        },
        "templates": {k: v for k, v in cfg["templates"].items() if k != "md"},
    }
    if cfg["templates"]["method"] == "md":
        recipe["templates"]["md"] = {k: v for k, v in cfg["templates"]["md"].items() if k != "platform"}
    return recipe


def differences(card_value, here, prefix: str) -> list[str]:
    """Dotted keys whose values differ between a card's recipe and this config's."""
    if isinstance(card_value, dict) and isinstance(here, dict):
        found = []
        for key in sorted(set(card_value) | set(here)):
            found += differences(card_value.get(key), here.get(key), f"{prefix}.{key}" if prefix else key)
        return found
    return [] if card_value == here else [f"{prefix}: card {card_value!r}, config {here!r}"]


def check_trained_model(cfg: dict) -> ModelCard:
    """A model trained elsewhere must fit this config: its weights, θ dims, image grid and template recipe.
    Returns its card."""
    path = Path(cfg["model"]["trained"])
    if not path.is_file():
        raise ConfigError(f"model.trained: file {str(path)!r} not found")
    card_path = path.with_name("card.json")
    try:
        card = read_card(card_path)
    except ConfigError as err:
        raise ConfigError(f"model.trained: {err}") from None
    if card is None:
        raise ConfigError(f"model.trained: {card_path} not found (the model card must lie beside the model file)")
    if "weights_sha256" in card and sha256_files(path) != card["weights_sha256"]:
        raise ConfigError(
            f"model.trained: {path} does not match the field 'weights_sha256' of {card_path}: "
            "the card belongs to other weights"
        )
    for field in ("architecture", "config", "template_recipe", "priors"):
        if field not in card:
            raise ConfigError(f"model.trained: {card_path} has no field {field!r}")
    found = []
    theta_range = card["architecture"]["theta_range_A"]
    dims = 2 if isinstance(theta_range[0], list) else 1
    if dims != cfg["templates"]["theta_dims"]:
        found.append(f"templates.theta_dims: card {dims}, config {cfg['templates']['theta_dims']}")
    found += differences(card["config"].get("image"), cfg["image"], "image")
    found += differences(card["template_recipe"], template_recipe(cfg), "")
    if found:
        raise ConfigError(
            f"model.trained: {path} was trained for another setting ({card_path}):\n  " + "\n  ".join(found)
        )
    return cast(ModelCard, card)
