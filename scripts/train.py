"""Rule train: neural posterior estimation on images simulated on the fly."""

import csv
import dataclasses
import hashlib
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from cryoflow import models, pipeline, training
from cryoflow.fileio import atomic_path, sha256_files, write_json
from cryoflow.logs import configure, package_versions
from cryoflow.report import plot_loss

TRAINING_CODE = ("simulator.py", "projection.py", "ctf.py", "junk.py", "models.py", "training.py")
log = configure(snakemake.log[0])
params = snakemake.params
config = {"image": params.image, "simulator": params.simulator}
torch.set_num_threads(snakemake.threads)
device = training.select_device(params.train["device"])
ensemble = pipeline.load_ensemble(snakemake.input.ensemble)
simulator = pipeline.load_simulator(snakemake.input, config, device=device)
priors = dataclasses.asdict(simulator.priors)  # as read from priors.json by load_simulator
model = pipeline.build_model(ensemble, params.train, simulator.priors)
log.info("estimator: %d parameters", models.count_parameters(model))
ensemble_sha256 = sha256_files(snakemake.input.ensemble)
inputs = snakemake.input
input_sha256 = {key: sha256_files(getattr(inputs, key)) for key in ("maps", "noise") if key in inputs.keys()}
run_config = {"seed": params.seed, "image": params.image, "simulator": params.simulator, "train": params.train}
# the code that makes the training images and the loss: a checkpoint from other code is not resumed
code_sha256 = sha256_files([Path(models.__file__).with_name(name) for name in TRAINING_CODE])
fingerprint = hashlib.sha256(
    json.dumps([run_config, priors, ensemble_sha256, input_sha256, code_sha256], sort_keys=True).encode()
).hexdigest()
started = time.time()
model, history, last_state = training.train(
    model,
    simulator,
    pipeline.training_config(params.train, params.seed),
    checkpoint=params.checkpoint,
    fingerprint=fingerprint,
)
best = min(history, key=lambda row: row["val_loss"])
card = {
    "model": "cryoflow neural posterior estimator: ResNet-18 embedding + neural spline flow (lampe NPE, zuko NSF)",
    "architecture": model.architecture,
    "parameters": models.count_parameters(model),
    "name": params.model_name,
    "seed": params.seed,
    "config": {**params.card_config, "train": params.train},
    "template_recipe": params.recipe,
    "priors": priors,
    "checksums_sha256": {"ensemble": ensemble_sha256, **input_sha256, "training_code": code_sha256},
    "template_theta_A": np.asarray(ensemble["theta_A"], dtype=float).tolist(),
    "packages": package_versions(["torch", "zuko", "lampe", "numpy", "mrcfile", "starfile"]),
    "python": platform.python_version(),
    "device": training.device_name(device),
    "steps_run": history[-1]["step"],
    "steps_planned": params.train["steps"],
    "best_step": best["step"],
    "best_val_loss": best["val_loss"],
    "final_train_loss": history[-1]["train_loss"],
    "final_val_loss": history[-1]["val_loss"],
    "uniform_prior_loss": models.uniform_prior_loss(model.architecture["theta_range_A"]),
    "wall_time_s": round(time.time() - started, 1),
    "sim_images_per_s": history[-1]["sim_images_per_s"],
    "steps_per_s": history[-1]["steps_per_s"],
}
models.save_model(snakemake.output.model, model, card)
model.load_state_dict(last_state)
models.save_model(snakemake.output.last_model, model, {**card, "weights": "last step"})
write_json(snakemake.output.card, card)
with atomic_path(snakemake.output.history) as tmp, open(tmp, "w", newline="") as handle:
    writer = csv.DictWriter(handle, fieldnames=list(history[0]), delimiter="\t")
    writer.writeheader()
    writer.writerows(history)
plot_loss(history, card["uniform_prior_loss"], snakemake.output.curve)
log.info("model card: %s", snakemake.output.card)
