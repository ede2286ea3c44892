"""The particle_noise rule: check the particles end to end, then measure each optics group's noise spectrum."""

from __future__ import annotations

from cryoflow.io import particles
from cryoflow.job import Job
from cryoflow.physics import preprocess, whitening


def run(job: Job) -> None:
    log = job.start_log()
    source_cfg, cfg, image, star = job.params.source, job.params.particles, job.params.image, job.input.star
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
        seed=job.params.seed,
    )
    preprocess.write_noise_spectra(job.output.noise, spectra, image["box_px"], image["pixel_size_A"])
