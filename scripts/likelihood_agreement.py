"""Rule likelihood_agreement: exact (BioEM-style) and estimated posteriors of a seeded subset of particles."""

from cryoflow.job import Job
from cryoflow.jobs import likelihood_agreement

likelihood_agreement.run(Job.from_snakemake(snakemake))
