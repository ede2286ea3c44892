"""Rule train: neural posterior estimation on images simulated on the fly, on one rank or many."""

from cryoflow.logs import configure
from cryoflow.sbi import trainjob

configure(snakemake.log[0])
trainjob.run(trainjob.TrainJob.from_snakemake(snakemake))
