"""Rule priors: the simulator's prior ranges, from the config, a dataset's STAR file, or a trained model's card."""

import json

import numpy as np

from cryoflow.io import particles
from cryoflow.io.fileio import write_json
from cryoflow.logs import configure
from cryoflow.physics import theta
from cryoflow.workflow import pipeline

log = configure(snakemake.log[0])
simulator = snakemake.params.simulator
theta_A = np.load(snakemake.input.ensemble)["theta_A"]
if "card" in snakemake.input.keys():  # a model trained elsewhere: the priors it was trained with
    priors = json.loads(open(snakemake.input.card).read())["priors"]
    log.info("priors of the trained model %s", snakemake.input.card)
else:
    found = None
    if "star" in snakemake.input.keys():
        star = snakemake.input.star
        table = particles.particle_table(star, pixel_size_A=snakemake.params.pixel_size_A)
        found = particles.ctf_priors(table, star)
        for key, value in found.items():
            log.info("%s: %s = %s", star, key, value)
        log.info("particles are resampled to the training pixel size %.4g Å", snakemake.params.image["pixel_size_A"])
    priors = pipeline.resolve_priors(simulator, theta.range_of(theta_A), found)
write_json(snakemake.output.priors, priors)
log.info("priors: %s", priors)
