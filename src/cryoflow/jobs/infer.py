"""The infer rule: per-particle posterior summaries and latents of one shard, streamed from its stack into
``posterior.npz``, and the summaries as STAR columns."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from cryoflow.errors import InputError
from cryoflow.io import particles
from cryoflow.io.mrcstack import iter_stack, read_stack_header
from cryoflow.io.npz import NpzWriter
from cryoflow.io.star import particle_block_name, read_star, star_version, write_star
from cryoflow.job import Job
from cryoflow.sbi import devices, inference, models
from cryoflow.sbi.models import PosteriorEstimator

log = logging.getLogger("cryoflow.infer")


def particle_ctf(model: PosteriorEstimator, table: pd.DataFrame, star: str) -> dict | None:
    """Each particle's CTF from its STAR row for a CTF-conditioned model (checked against its prior), else
    None."""
    if model.ctf_context is None:
        return None
    ctf, _ = particles.star_ctf(table, np.arange(len(table)))
    if ctf is None:
        raise InputError(
            f"{star}: no _rlnDefocusU column, which the CTF-conditioned model (train.condition_on_ctf) needs"
        )
    models.check_ctf_in_prior(model, ctf, star)
    return ctf


def run(job: Job) -> None:
    job.start_log()
    cfg, star, stack, shard = job.params.inference, job.input.star, job.input.stack, int(job.wildcards.shard)
    torch.set_num_threads(job.threads)
    device = devices.select_device(cfg["device"], "inference.device")
    model, _ = models.load_model(job.input.model, device)
    blocks = read_star(star)
    table = blocks[particle_block_name(blocks, star)]
    n_images = read_stack_header(Path(stack)).n_images
    if len(table) != n_images:
        raise InputError(f"{star}: {len(table)} particles but {stack} has {n_images}")
    ctf = particle_ctf(model, table, star)
    start = time.perf_counter()
    columns: dict[str, list] = {}
    with NpzWriter(job.output.npz) as writer:
        for summary in inference.posterior_stream(
            model,
            iter_stack(stack, cfg["batch_size"]),
            n_images,
            grid_points=cfg["grid_points"],
            grid_points_2d=cfg["grid_points_2d"],
            n_samples=cfg["n_samples"],
            seed=job.params.seed + shard,
            device=device,
            label=f"shard {shard}",
            ctf=ctf,
        ):
            summary["latent"] = summary["latent"].astype(np.float16)  # halves the archive; ample for UMAP, MMD
            writer.append(**summary)
            for column, values in inference.star_columns(summary, model.theta_dim).items():
                columns.setdefault(column, []).append(values)
        seconds = time.perf_counter() - start
        range_A = np.asarray(model.architecture["theta_range_A"])
        writer.close(theta_grid_range_A=range_A, seconds=np.array([seconds]), device=np.array([str(device)]))
    for column, parts in columns.items():
        table[column] = np.concatenate(parts)
    write_star(job.output.star, blocks, star_version(star))
    widths = {column: round(float(table[column].median()), 2) for column in columns if column.endswith("StdAngst")}
    log.info(
        "%d particles in %.1f s (%.0f particles/s on %s); median posterior σ in Å: %s",
        len(table),
        seconds,
        len(table) / seconds,
        device,
        widths,
    )
