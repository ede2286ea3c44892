"""Rule pick: one shard of a micrograph set, window by window: posterior maps, candidates, example windows."""

import json
from pathlib import Path

import numpy as np
import torch

from cryoflow.analysis import pick_job, predictive
from cryoflow.io import micrographs, starindex
from cryoflow.logs import configure
from cryoflow.sbi import models, training

log = configure(snakemake.log[0])
ms = snakemake.params.mset
image = snakemake.params.image
shard = int(snakemake.wildcards.shard)
torch.set_num_threads(snakemake.threads)
device = training.select_device(ms["picking"]["device"])
star = snakemake.input.star[0] if snakemake.input.star else None
every, source = micrographs.open_set(ms, star, snakemake.params.optics)
mine = [(i, every[i]) for i in starindex.shard_rows(len(every), ms["shards"])[shard]]
# every file checked before any output
headers = micrographs.check([m for _, m in mine], image["box_px"] * image["pixel_size_A"], source)
model, _ = models.load_model(snakemake.input.model, device)
card = json.loads(Path(snakemake.input.card).read_text())
reference = predictive.LatentReference(np.load(snakemake.input.reference)["latent"], ms["picking"]["neighbours"])
log.info("shard %d: %d of %d micrographs", shard, len(mine), len(every))
pick_job.pick_shard(
    model,
    mine,
    headers,
    ms,
    image,
    reference,
    card["priors"]["defocus_range_A"],
    {"maps": snakemake.output.maps, "table": snakemake.output.table, "stats": snakemake.output.stats},
    mask_radius_A=snakemake.params.mask_radius_A,
    seed=snakemake.params.seed,
    device=device,
)
