"""Rule demo_particles: a synthetic RELION 3.1 dataset with known θ, simulated from the model's templates."""

import shutil
from pathlib import Path

import torch

from cryoflow.demo import dataset
from cryoflow.logs import configure
from cryoflow.physics import theta
from cryoflow.workflow import pipeline

log = configure(snakemake.log[0])
cfg = snakemake.params.demo
config = {"image": snakemake.params.image, "simulator": snakemake.params.simulator}
torch.set_num_threads(snakemake.threads)
ensemble = pipeline.load_ensemble(snakemake.input.ensemble)
priors = pipeline.priors_from_dict(pipeline.resolve_priors(config["simulator"], theta.range_of(ensemble["theta_A"])))
simulator = pipeline.build_simulator(
    ensemble, config, priors, box_px=cfg["box_px"], pixel_size_A=cfg["pixel_size_A"], projection="atoms"
)
project = Path(snakemake.output.star).parents[2]  # …/demo: the RELION project folder
try:
    star = dataset.make_dataset(
        simulator,
        project,
        cfg["n_particles"],
        cfg["populations"],
        tuple(cfg["snr_range"]),
        cfg["noise_colour_strength"],
        cfg["noise_corner_A"],
        cfg["particles_per_stack"],
        seed=snakemake.params.seed + 1,
    )
except BaseException:
    shutil.rmtree(snakemake.output.stacks, ignore_errors=True)
    raise
log.info("wrote %s with %d particles", star, cfg["n_particles"])
