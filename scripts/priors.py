"""Rule priors: the simulator's prior ranges, from the config or read from the particles' STAR file."""

import numpy as np

from cryoflow import particles, pipeline, theta
from cryoflow.fileio import write_json
from cryoflow.logs import configure

log = configure(snakemake.log[0])
config = snakemake.params.config
theta_A = np.load(snakemake.input.ensemble)["theta_A"]
found = None
if config["simulator"]["priors_from_star"]:
    star = snakemake.input.star
    table = particles.particle_table(star, pixel_size_A=config["particles"]["pixel_size_A"])
    found = particles.ctf_priors(table, star)
    for key, value in found.items():
        log.info("%s: %s = %s", star, key, value)
    log.info("particles are resampled to the training pixel size %.4g Å", config["image"]["pixel_size_A"])
priors = pipeline.resolve_priors(config["simulator"], theta.range_of(theta_A), found)
write_json(snakemake.output.priors, priors)
log.info("priors: %s", priors)
