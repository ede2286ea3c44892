"""Rule demo_micrographs: synthetic micrographs with known particles, written like a RELION CTF job."""

from cryoflow.job import Job
from cryoflow.jobs import demo_micrographs

demo_micrographs.run(Job.from_snakemake(snakemake))
