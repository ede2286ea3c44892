"""Rule volumes: rasterize every template to an MRC map on a grid shared by all templates."""

from cryoflow.job import Job
from cryoflow.jobs import volumes

volumes.run(Job.from_snakemake(snakemake))
