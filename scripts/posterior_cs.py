"""Rule posterior_cs: a cryoSPARC dataset's results as a .cs file, every input field kept, cryoflow's added,
and its .csg result group for cryoSPARC's Import Result Group."""

from cryoflow.job import Job
from cryoflow.jobs import posterior_cs

posterior_cs.run(Job.from_snakemake(snakemake))
