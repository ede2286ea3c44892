"""Rule likelihood_reference: exact (BioEM-style) and estimated posteriors of held-out fixed-SNR images."""

from cryoflow.job import Job
from cryoflow.jobs import likelihood_reference

likelihood_reference.run(Job.from_snakemake(snakemake))
