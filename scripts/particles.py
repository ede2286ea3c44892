"""Rule particles: one shard of the particles on the training grid (resampled, whitened, normalized)."""

from cryoflow import particles, preprocess
from cryoflow.logs import configure

log = configure(snakemake.log[0])
cfg = snakemake.params.particles
image = snakemake.params.image
star = snakemake.input.star
shard = int(snakemake.wildcards.shard)
found = particles.load_particles(star, cfg["pixel_size_A"], cfg["select"])
rows = particles.shard_rows(len(found.table), cfg["shards"])[shard]
log.info("shard %d of %d: particles %d to %d of %d", shard, cfg["shards"], rows[0] + 1, rows[-1] + 1, len(found.table))
# only this shard's stacks are opened (particle_noise checked them all)
source = particles.ParticleSource(found.table.iloc[rows], star, cfg["datadir"], first_row=int(rows[0]))
spectra = preprocess.read_noise_spectra(snakemake.input.noise) if cfg["whiten"] else None
preprocess.preprocess(
    source,
    snakemake.output.stack,
    image["box_px"],
    image["pixel_size_A"],
    noise_spectra=spectra,
    chunk=cfg["chunk_size"],
    label=f"shard {shard}",
)
particles.write_star(snakemake.output.star, particles.shard_blocks(found, rows), found.version)
