"""Rule infer: per-particle posterior summaries and latents of one shard; STAR columns + npz."""

import time

import mrcfile
import numpy as np
import torch

from cryoflow import inference, models, particles, training
from cryoflow.fileio import InputError, atomic_path
from cryoflow.logs import configure

log = configure(snakemake.log[0])
cfg = snakemake.params.inference
torch.set_num_threads(snakemake.threads)
device = training.select_device(cfg["device"])
model, metadata = models.load_model(snakemake.input.model, device)
blocks = particles.read_star(snakemake.input.star)
table = blocks[particles.particle_block_name(blocks, snakemake.input.star)]
start = time.perf_counter()
with mrcfile.mmap(snakemake.input.stack, mode="r", permissive=True) as mrc:
    stack = mrc.data
    if len(table) != len(stack):
        raise InputError(f"{snakemake.input.star}: {len(table)} particles but {snakemake.input.stack} has {len(stack)}")
    result = inference.posterior_batches(
        model,
        inference.batched(stack, cfg["batch_size"]),
        len(stack),
        grid_points=cfg["grid_points"],
        n_samples=cfg["n_samples"],
        seed=snakemake.params.seed + int(snakemake.wildcards.shard),
        device=device,
    )
seconds = time.perf_counter() - start
for column, key in inference.STAR_COLUMNS.items():
    table[column] = result[key]
result["latent"] = result["latent"].astype(np.float16)  # halves the archive; ample for UMAP and MMD
particles.write_star(snakemake.output.star, blocks, particles.star_version(snakemake.input.star))
with atomic_path(snakemake.output.npz) as tmp, open(tmp, "wb") as handle:
    np.savez(handle, **result, theta_grid_range_A=model.architecture["theta_range_A"],
             seconds=np.array([seconds]), device=np.array([str(device)]))  # fmt: skip
rate = len(table) / seconds
log.info("%d particles in %.1f s (%.0f particles/s on %s); θ mean %.2f Å, median σ %.2f Å",
         len(table), seconds, rate, device, result["mean"].mean(), np.median(result["std"]))  # fmt: skip
