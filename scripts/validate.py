"""Rule validate: held-out simulations (seeded) with their posteriors and latents."""

import numpy as np
import torch

from cryoflow.logs import configure
from cryoflow.sbi import models, training, validation
from cryoflow.workflow import pipeline

log = configure(snakemake.log[0])
settings = snakemake.params.validation
config = {"image": snakemake.params.image, "simulator": snakemake.params.simulator}
torch.set_num_threads(snakemake.threads)
device = training.select_device(settings["device"])
model, _ = models.load_model(snakemake.input.model, device)
simulator = pipeline.load_simulator(snakemake.input, config, device=device)
ensemble = np.load(snakemake.input.ensemble)  # coords_A and theta_A are read
arrays = validation.validation_arrays(model, simulator, ensemble, settings, snakemake.params.seed, device)
validation.write_validation(snakemake.output.npz, arrays)
log.info("validation: %d simulations", settings["n_simulations"])
