"""The pick rule: one shard of a micrograph set, window by window: posterior maps, candidates, example windows."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from cryoflow.analysis import pick_job, predictive
from cryoflow.io import micrographs, starindex
from cryoflow.job import Job
from cryoflow.sbi import devices, models


def run(job: Job) -> None:
    log = job.start_log()
    ms = job.params.mset
    image = job.params.image
    shard = int(job.wildcards.shard)
    torch.set_num_threads(job.threads)
    device = devices.select_device(ms["picking"]["device"], "picking.device")
    star = job.input.star[0] if job.input.star else None
    every, source = micrographs.open_set(ms, star, job.params.optics)
    mine = [(i, every[i]) for i in starindex.shard_rows(len(every), ms["shards"])[shard]]
    # every file checked before any output
    headers = micrographs.check([m for _, m in mine], image["box_px"] * image["pixel_size_A"], source)
    model, _ = models.load_model(job.input.model, device)
    card = json.loads(Path(job.input.card).read_text())
    reference = predictive.LatentReference(np.load(job.input.reference)["latent"], ms["picking"]["neighbours"])
    log.info("shard %d: %d of %d micrographs", shard, len(mine), len(every))
    pick_job.pick_shard(
        model,
        mine,
        headers,
        ms,
        image,
        reference,
        card["priors"]["defocus_range_A"],
        {"maps": job.output.maps, "table": job.output.table, "stats": job.output.stats},
        mask_radius_A=job.params.mask_radius_A,
        seed=job.params.seed,
        device=device,
    )
