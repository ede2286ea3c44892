"""Rule demo_micrographs: synthetic micrographs with known particles, written like a RELION CTF job."""

import shutil

import torch

from cryoflow.demo import micrograph_set
from cryoflow.logs import configure
from cryoflow.physics import theta
from cryoflow.workflow import pipeline

log = configure(snakemake.log[0])
cfg = snakemake.params.demo
image = snakemake.params.image
config = {"image": image, "simulator": snakemake.params.simulator}
torch.set_num_threads(snakemake.threads)
ensemble = pipeline.load_ensemble(snakemake.input.ensemble)
priors = pipeline.priors_from_dict(pipeline.resolve_priors(config["simulator"], theta.range_of(ensemble["theta_A"])))
simulator = pipeline.build_simulator(
    ensemble, config, priors, box_px=cfg["box_px"], pixel_size_A=cfg["pixel_size_A"], projection="atoms"
)
project = snakemake.output.star.rsplit("/CtfFind/", 1)[0]  # …/demo: the RELION project folder
try:
    star = micrograph_set.make_micrographs(
        simulator, project, cfg, window_A=image["box_px"] * image["pixel_size_A"], seed=snakemake.params.seed + 3
    )
except BaseException:
    shutil.rmtree(snakemake.output.micrographs, ignore_errors=True)
    raise
log.info("wrote %s with %d micrographs", star, cfg["n_micrographs"])
