"""Rule particle_noise: check the particles end to end, then measure each optics group's noise spectrum."""

from cryoflow import particles, preprocess
from cryoflow.fileio import InputError
from cryoflow.logs import configure

log = configure(snakemake.log[0])
cfg = snakemake.params.particles
image = snakemake.params.image
star = snakemake.input.star
found = particles.load_particles(star, cfg["pixel_size_A"], cfg["select"])
source = particles.ParticleSource(found.table, star, cfg["datadir"])
log.info("%s (STAR version %d): %d particles in %d stacks, optics groups %s",
         star, found.version, len(source), len(source.headers), source.groups())  # fmt: skip
if len(source) < cfg["shards"]:
    raise InputError(f"{star}: {len(source)} particles cannot fill particles.shards = {cfg['shards']}")
spectra = preprocess.estimate_noise_spectra(
    source,
    image["box_px"],
    image["pixel_size_A"],
    cfg["mask_radius_A"] or 0.4 * image["box_px"] * image["pixel_size_A"],
    noise_images=cfg["noise_images"],
    chunk=cfg["chunk_size"],
    seed=snakemake.params.seed,
)
preprocess.write_noise_spectra(snakemake.output.noise, spectra, image["box_px"], image["pixel_size_A"])
