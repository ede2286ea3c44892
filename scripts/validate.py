"""Rule validate: held-out simulations (seeded) with their posteriors and latents."""

from cryoflow.job import Job
from cryoflow.jobs import validate

validate.run(Job.from_snakemake(snakemake))
