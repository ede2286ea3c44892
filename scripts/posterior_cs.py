"""Rule posterior_cs: a cryoSPARC dataset's results as a .cs file, every input field kept, cryoflow's added,
and its .csg result group for cryoSPARC's Import Result Group."""

from cryoflow.io import cryosparc_results
from cryoflow.io.star import particle_block_name, read_star
from cryoflow.logs import configure

log = configure(snakemake.log[0])
blocks = read_star(snakemake.input.star)
table = blocks[particle_block_name(blocks, snakemake.input.star)]
n = cryosparc_results.write_results(snakemake.input.cs, table, snakemake.output.cs)
log.info("%s: %d particles of %s with their cryoflow/ fields", snakemake.output.cs, n, snakemake.input.cs)
group = cryosparc_results.write_result_group(
    snakemake.output.cs, snakemake.output.csg, f"cryoflow posterior, dataset {snakemake.wildcards.dataset}"
)
log.info("%s: result group of slots %s", snakemake.output.csg, ", ".join(group["results"]))
