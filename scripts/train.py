"""Rule train: neural posterior estimation on images simulated on the fly, on one rank or many."""

from cryoflow import trainjob
from cryoflow.logs import configure

configure(snakemake.log[0])
trainjob.run(trainjob.TrainJob.from_snakemake(snakemake))
