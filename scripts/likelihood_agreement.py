"""Rule likelihood_agreement: exact (BioEM-style) and estimated posteriors of a seeded subset of particles."""

import numpy as np
import torch

from cryoflow.analysis import diagnostics
from cryoflow.io import particles, starindex
from cryoflow.io.fileio import atomic_path, write_json
from cryoflow.logs import configure
from cryoflow.report import figures
from cryoflow.sbi import models, reference, training
from cryoflow.workflow import pipeline

log = configure(snakemake.log[0])
params = snakemake.params
cfg = params.likelihood["likelihood"]
torch.set_num_threads(snakemake.threads)
device = training.select_device(params.inference["device"])
model, _ = models.load_model(snakemake.input.model, device)
simulator = pipeline.load_simulator(
    snakemake.input, {"image": params.image, "simulator": params.simulator}, device=device
)
post = np.load(snakemake.input.posterior)
table = particles.particle_table(snakemake.input.star)
rows = np.array(starindex.sample_rows(len(table), cfg["n_images"], params.seed))
images = figures.gathered_images(snakemake.input.stacks, post["shard_particles"], rows)
ctf, missing = particles.star_ctf(table, rows)
if ctf is not None and missing:
    log.info("CTF columns absent (the prior's values are used): %s", missing)
result = reference.dataset_reference(
    simulator, model, images, ctf, cfg, params.inference["grid_points"], params.seed, device, where=snakemake.input.star
)
summary = {}
for mode in cfg["nuisance"]:
    chosen = {
        key: value[result["mode"] == mode] for key, value in result.items() if key not in ("theta_nodes_A", "grid_A")
    }
    summary[mode] = diagnostics.likelihood_agreement(chosen)
    log.info("exact vs estimated posteriors (%s): %s", mode, summary[mode])
with atomic_path(snakemake.output.npz) as tmp, open(tmp, "wb") as handle:
    np.savez(handle, rows=rows, **result)
write_json(snakemake.output.summary, {"likelihood_agreement": summary, "n_particles": int(len(rows))})
