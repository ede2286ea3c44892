"""Rule infer: per-particle posterior summaries and latents; STAR columns + npz."""

import mrcfile
import numpy as np
import torch

from cryoflow import inference, models, particles, training
from cryoflow.fileio import atomic_path
from cryoflow.logs import configure

log = configure(snakemake.log[0])
cfg = snakemake.params.inference
torch.set_num_threads(snakemake.threads)
device = training.select_device(cfg["device"])
model, metadata = models.load_model(snakemake.input.model, device)
with mrcfile.mmap(snakemake.input.stack, mode="r", permissive=True) as mrc:
    stack = mrc.data
    result = inference.posterior_batches(
        model,
        inference.batched(stack, cfg["batch_size"]),
        len(stack),
        grid_points=cfg["grid_points"],
        n_samples=cfg["n_samples"],
        seed=snakemake.params.seed,
        device=device,
    )
blocks = particles.read_star(snakemake.input.star)
name = particles.particle_block_name(blocks, snakemake.input.star)
table = blocks[name]
if len(table) != len(result["mean"]):
    raise ValueError(f"{snakemake.input.star}: {len(table)} particles but {len(result['mean'])} images")
for column, key in inference.STAR_COLUMNS.items():
    table[column] = result[key]
particles.write_star(snakemake.output.star, blocks)
with atomic_path(snakemake.output.npz) as tmp, open(tmp, "wb") as handle:
    np.savez(handle, **{k: v for k, v in result.items()}, theta_grid_range_A=model.architecture["theta_range_A"])
log.info("θ posterior mean over particles: %.2f Å; median σ %.2f Å", result["mean"].mean(), np.median(result["std"]))
