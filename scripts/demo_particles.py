"""Rule demo_particles: a synthetic RELION 3.1 dataset with known θ, simulated from the model's templates."""

from cryoflow.job import Job
from cryoflow.jobs import demo_particles

demo_particles.run(Job.from_snakemake(snakemake))
