"""Rule md: prepare the selected chains with PDBFixer and run OpenMM; the prepared PDB and a DCD trajectory."""

from cryoflow.job import Job
from cryoflow.jobs import md

md.run(Job.from_snakemake(snakemake))
