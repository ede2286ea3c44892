"""Rule likelihood_reference: exact (BioEM-style) and estimated posteriors of held-out fixed-SNR images."""

import numpy as np
import torch

from cryoflow.analysis import diagnostics
from cryoflow.io.fileio import atomic_path
from cryoflow.logs import configure
from cryoflow.sbi import models, reference, training
from cryoflow.workflow import pipeline

log = configure(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
cfg = snakemake.params.validation
device = training.select_device(cfg["device"])
config = {"image": snakemake.params.image, "simulator": snakemake.params.simulator}
model, _ = models.load_model(snakemake.input.model, device)
simulator = pipeline.load_simulator(snakemake.input, config, device=device)
result = reference.validation_reference(simulator, model, cfg, snakemake.params.seed, device)
with atomic_path(snakemake.output.npz) as tmp, open(tmp, "wb") as handle:
    np.savez(handle, **result)
for entry in diagnostics.likelihood_comparison(result):
    log.info("%s", {k: round(v, 3) if isinstance(v, float) else v for k, v in entry.items()})
