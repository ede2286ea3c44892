"""Rule posterior_cs: a cryoSPARC dataset's results as a .cs file, every input field kept, cryoflow's added."""

from cryoflow.io import cryosparc_results
from cryoflow.io.star import particle_block_name, read_star
from cryoflow.logs import configure

log = configure(snakemake.log[0])
blocks = read_star(snakemake.input.star)
table = blocks[particle_block_name(blocks, snakemake.input.star)]
n = cryosparc_results.write_results(snakemake.input.cs, table, snakemake.output.cs)
log.info("%s: %d particles of %s with their cryoflow/ fields", snakemake.output.cs, n, snakemake.input.cs)
