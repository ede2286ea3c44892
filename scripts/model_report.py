"""Rule model_report: the model's calibration on held-out simulations and its template ensemble."""

from cryoflow.job import Job
from cryoflow.jobs import model_report

model_report.run(Job.from_snakemake(snakemake))
