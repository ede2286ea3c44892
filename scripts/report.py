"""Rule report: one dataset's figures and summary.json from its posteriors, latents and the model's simulations."""

from cryoflow.job import Job
from cryoflow.jobs import report

report.run(Job.from_snakemake(snakemake))
