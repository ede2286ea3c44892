"""The posterior_cs rule: a cryoSPARC dataset's results as a .cs file, every input field kept, cryoflow's added,
and its .csg result group for cryoSPARC's Import Result Group."""

from __future__ import annotations

from cryoflow.io import cryosparc_results
from cryoflow.io.star import particle_block_name, read_star
from cryoflow.job import Job


def run(job: Job) -> None:
    log = job.start_log()
    blocks = read_star(job.input.star)
    table = blocks[particle_block_name(blocks, job.input.star)]
    n = cryosparc_results.write_results(job.input.cs, table, job.output.cs)
    log.info("%s: %d particles of %s with their cryoflow/ fields", job.output.cs, n, job.input.cs)
    group = cryosparc_results.write_result_group(
        job.output.cs, job.output.csg, f"cryoflow posterior, dataset {job.wildcards.dataset}"
    )
    log.info("%s: result group of slots %s", job.output.csg, ", ".join(group["results"]))
