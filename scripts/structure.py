"""Rule structure: fetch or read the structure, select chains and beads, write the reference PDB."""

from cryoflow.job import Job
from cryoflow.jobs import structure

structure.run(Job.from_snakemake(snakemake))
