"""The particles rule: one shard of the particles on the training grid (resampled, whitened, normalized)."""

from __future__ import annotations

import numpy as np

from cryoflow.io import particles, starindex
from cryoflow.io.star import write_star
from cryoflow.job import Job
from cryoflow.physics import preprocess


def run(job: Job) -> None:
    log = job.start_log()
    source_cfg, cfg, image, star = job.params.source, job.params.particles, job.params.image, job.input.star
    shard = int(job.wildcards.shard)
    found = particles.load_particles(star, source_cfg["pixel_size_A"], source_cfg["select"])
    rows = starindex.shard_rows(len(found.table), job.params.shards)[shard]
    log.info(
        "shard %d of %d: particles %d to %d of %d",
        shard,
        job.params.shards,
        rows[0] + 1,
        rows[-1] + 1,
        len(found.table),
    )
    # only this shard's stacks are opened (particle_noise checked them all)
    source = particles.ParticleSource(
        found.table.iloc[rows], star, source_cfg["datadir"], first_row=rows[0], invert=source_cfg["contrast"] == "dark"
    )
    spectra = preprocess.read_noise_spectra(job.input.noise) if cfg["whiten"] else None
    blank = preprocess.preprocess(
        source,
        job.output.stack,
        image["box_px"],
        image["pixel_size_A"],
        noise_spectra=spectra,
        chunk=cfg["chunk_size"],
        label=f"shard {shard}",
    )
    blocks = particles.shard_blocks(found, np.asarray(rows))
    blocks[found.block_name]["cryoflowBlankImage"] = blank.astype(int)  # counted in the report
    write_star(job.output.star, blocks, found.version)
