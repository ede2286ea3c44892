"""Rule micrograph_report: a micrograph set's candidates (STAR files RELION reads), summary.json and figure."""

from cryoflow.job import Job
from cryoflow.jobs import micrograph_report

micrograph_report.run(Job.from_snakemake(snakemake))
