"""Rule train: neural posterior estimation on images simulated on the fly."""

import csv
import hashlib
import json
from pathlib import Path

import torch

from cryoflow import models, pipeline, training
from cryoflow.fileio import atomic_path, sha256_files
from cryoflow.logs import configure
from cryoflow.report import plot_loss

log = configure(snakemake.log[0])
config = snakemake.params.config
torch.set_num_threads(snakemake.threads)
device = training.select_device(config["train"]["device"])
ensemble = pipeline.load_ensemble(snakemake.input.ensemble)
simulator = pipeline.load_simulator(snakemake.input, config, device=device)
priors = json.loads(Path(snakemake.input.priors).read_text())
model = pipeline.build_model(ensemble, config["train"])
log.info("estimator: %d parameters", models.count_parameters(model))
ensemble_sha256 = sha256_files(snakemake.input.ensemble)
inputs = snakemake.input
input_sha256 = {key: sha256_files(getattr(inputs, key)) for key in ("maps", "noise") if key in inputs.keys()}
run_config = {key: config[key] for key in ("seed", "image", "simulator", "train")}
fingerprint = hashlib.sha256(
    json.dumps([run_config, priors, ensemble_sha256, input_sha256], sort_keys=True).encode()
).hexdigest()
model, history = training.train(
    model,
    simulator,
    pipeline.training_config(config["train"], config["seed"]),
    checkpoint=snakemake.params.checkpoint,
    fingerprint=fingerprint,
)
metadata = {
    "image": dict(config["image"]),
    "simulator": dict(config["simulator"]),
    "priors": priors,
    "train": {k: v for k, v in config["train"].items() if not isinstance(v, dict)},
    "seed": config["seed"],
    "ensemble_sha256": ensemble_sha256,
    "final_val_loss": min(row["val_loss"] for row in history),
    "torch_version": torch.__version__,
}
models.save_model(snakemake.output.model, model, metadata)
with atomic_path(snakemake.output.history) as tmp, open(tmp, "w", newline="") as handle:
    writer = csv.DictWriter(handle, fieldnames=list(history[0]), delimiter="\t")
    writer.writeheader()
    writer.writerows(history)
plot_loss(history, models.uniform_prior_loss(model.architecture["theta_range_A"]), snakemake.output.curve)
