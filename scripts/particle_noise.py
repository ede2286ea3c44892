"""Rule particle_noise: check the particles end to end, then measure each optics group's noise spectrum."""

from cryoflow.job import Job
from cryoflow.jobs import particle_noise

particle_noise.run(Job.from_snakemake(snakemake))
