"""The structure rule: fetch or read the structure, select chains and beads, write the reference PDB."""

from __future__ import annotations

from cryoflow.io import structure, structure_text
from cryoflow.job import Job


def run(job: Job) -> None:
    log = job.start_log()
    cfg = job.params.structure
    source = cfg["source"]
    if structure_text.is_pdb_id(source):
        path = structure.fetch_structure(source, cfg["cache_dir"], cfg["format"], cfg["rcsb_url"])
    else:
        path = source
    atoms = structure.load_structure(path)
    selected = structure.select_atoms(atoms, cfg["chains"], cfg["beads"], source=str(path))
    weights = structure.bead_weights(selected, cfg["beads"])
    log.info(
        "%s: %d beads (%s) from chains %s, %.0f electrons",
        path,
        selected.numAtoms(),
        cfg["beads"],
        ", ".join(sorted({str(c) for c in selected.getChids()})),
        weights.sum(),
    )
    renamed = structure.write_pdb(job.output.pdb, selected)
    structure.write_pdb(job.output.chains, structure.chain_atoms(atoms, cfg["chains"]))
    if renamed:
        log.info("chain ids renamed for the PDB format (mmCIF → PDB): %s", renamed)
