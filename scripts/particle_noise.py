"""Rule particle_noise: check the particles end to end, then measure each optics group's noise spectrum."""

from cryoflow.io import particles
from cryoflow.logs import configure
from cryoflow.physics import preprocess, whitening

log = configure(snakemake.log[0])
source_cfg = snakemake.params.source
cfg = snakemake.params.particles
image = snakemake.params.image
star = snakemake.input.star
source = particles.open_dataset(star, source_cfg)
log.info(
    "%s: %d particles in %d stacks, optics groups %s, contrast %s",
    star,
    len(source),
    len(source.headers),
    source.groups(),
    source_cfg["contrast"],
)
spectra = preprocess.estimate_noise_spectra(
    source,
    image["box_px"],
    image["pixel_size_A"],
    whitening.noise_mask_radius_A(cfg["mask_radius_A"], image),
    noise_images=cfg["noise_images"],
    chunk=cfg["chunk_size"],
    seed=snakemake.params.seed,
)
preprocess.write_noise_spectra(snakemake.output.noise, spectra, image["box_px"], image["pixel_size_A"])
