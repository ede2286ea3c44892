"""Rule particles: read the STAR file and stacks, bring particles onto the training grid, whiten."""

import csv

import numpy as np

from cryoflow import particles
from cryoflow.fileio import atomic_path
from cryoflow.logs import configure

log = configure(snakemake.log[0])
cfg = snakemake.params.particles
image = snakemake.params.image
star_path = snakemake.input.star
blocks = particles.read_star(star_path)
table = particles.particle_table(star_path, blocks, pixel_size_A=cfg["pixel_size_A"])
source = particles.ParticleSource(table, star_path, cfg["datadir"])
log.info("%s: %d particles in %d stacks", star_path, len(source), len(set(source.paths)))
mask_radius_A = cfg["mask_radius_A"] or 0.4 * image["box_px"] * image["pixel_size_A"]
facts = particles.preprocess(
    source,
    snakemake.output.stack,
    image["box_px"],
    image["pixel_size_A"],
    mask_radius_A,
    whiten_noise=cfg["whiten"],
    noise_images=cfg["noise_images"],
    chunk=cfg["chunk_size"],
    seed=snakemake.params.seed,
)
particles.write_star(snakemake.output.star, blocks)
with atomic_path(snakemake.output.noise) as tmp, open(tmp, "w", newline="") as handle:
    writer = csv.writer(handle, delimiter="\t")
    writer.writerow(["pixel_size_in_A", "radius_px", "frequency_per_A", "noise_power"])
    for pixel, power in facts["noise_power"].items():
        for radius, value in enumerate(power):
            frequency = radius / (image["box_px"] * image["pixel_size_A"])
            writer.writerow([pixel, radius, f"{frequency:.5f}", f"{value:.6g}"])
log.info("preprocessed %d particles; noise spectra for pixel sizes %s", facts["n_particles"],
         [float(np.round(p, 4)) for p in facts["pixel_sizes_in_A"]])  # fmt: skip
