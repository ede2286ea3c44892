"""Rule infer: per-particle posterior summaries and latents of one shard; STAR columns + npz, streamed."""

import time
from pathlib import Path

import numpy as np
import torch

from cryoflow.errors import InputError
from cryoflow.io import particles
from cryoflow.io.mrcstack import iter_stack, read_stack_header
from cryoflow.io.npz import NpzWriter
from cryoflow.io.star import particle_block_name, read_star, star_version, write_star
from cryoflow.logs import configure
from cryoflow.sbi import inference, models, training

log = configure(snakemake.log[0])
cfg = snakemake.params.inference
torch.set_num_threads(snakemake.threads)
device = training.select_device(cfg["device"])
model, metadata = models.load_model(snakemake.input.model, device)
blocks = read_star(snakemake.input.star)
table = blocks[particle_block_name(blocks, snakemake.input.star)]
start = time.perf_counter()
columns = {}
n_images = read_stack_header(Path(snakemake.input.stack)).n_images
if len(table) != n_images:
    raise InputError(f"{snakemake.input.star}: {len(table)} particles but {snakemake.input.stack} has {n_images}")
ctf = None
if model.ctf_context is not None:  # a CTF-conditioned model: each particle's own CTF from its STAR row
    ctf, _ = particles.star_ctf(table, np.arange(len(table)))
    if ctf is None:
        raise InputError(
            f"{snakemake.input.star}: no _rlnDefocusU column, which the CTF-conditioned model "
            "(train.condition_on_ctf) needs"
        )
    models.check_ctf_in_prior(model, ctf, snakemake.input.star)
with NpzWriter(snakemake.output.npz) as writer:
    for summary in inference.posterior_stream(
        model,
        iter_stack(snakemake.input.stack, cfg["batch_size"]),
        n_images,
        grid_points=cfg["grid_points"],
        grid_points_2d=cfg["grid_points_2d"],
        n_samples=cfg["n_samples"],
        seed=snakemake.params.seed + int(snakemake.wildcards.shard),
        device=device,
        label=f"shard {snakemake.wildcards.shard}",
        ctf=ctf,
    ):
        summary["latent"] = summary["latent"].astype(np.float16)  # halves the archive; ample for UMAP and MMD
        writer.append(**summary)
        for column, values in inference.star_columns(summary, model.theta_dim).items():
            columns.setdefault(column, []).append(values)
    seconds = time.perf_counter() - start
    writer.close(
        theta_grid_range_A=np.asarray(model.architecture["theta_range_A"]),
        seconds=np.array([seconds]),
        device=np.array([str(device)]),
    )
for column, values in columns.items():
    table[column] = np.concatenate(values)
write_star(snakemake.output.star, blocks, star_version(snakemake.input.star))
widths = {column: round(float(table[column].median()), 2) for column in columns if column.endswith("StdAngst")}
log.info(
    "%d particles in %.1f s (%.0f particles/s on %s); median posterior σ in Å: %s",
    len(table),
    seconds,
    len(table) / seconds,
    device,
    widths,
)
