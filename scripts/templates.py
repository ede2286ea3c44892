"""Rule templates: normal-mode ensemble ordered by θ (Å); PDBs, a θ table and ensemble.npz."""

import csv

import numpy as np

from cryoflow import structure, templates
from cryoflow.fileio import atomic_path
from cryoflow.logs import configure

log = configure(snakemake.log[0])
cfg = snakemake.params.templates
beads = snakemake.params.beads
atoms = structure.load_structure(snakemake.input.pdb)
nma = cfg["nma"]
ensemble = templates.normal_mode_ensemble(
    atoms, cfg["n_templates"], tuple(nma["modes"]), nma["max_rmsd_A"], nma["cutoff_A"], nma["spring_constant"]
)
for path, coords in zip(snakemake.output.pdbs, ensemble.coords):
    structure.write_pdb(path, atoms, coords)
rows = ensemble.table_rows()
with atomic_path(snakemake.output.table) as tmp, open(tmp, "w", newline="") as handle:
    writer = csv.DictWriter(handle, fieldnames=list(rows[0]), delimiter="\t")
    writer.writeheader()
    writer.writerows(rows)
with atomic_path(snakemake.output.ensemble) as tmp, open(tmp, "wb") as handle:
    np.savez(
        handle,
        coords_A=ensemble.coords.astype(np.float32),
        theta_A=ensemble.theta_A,
        weights=structure.bead_weights(atoms, beads),
        mode=ensemble.mode,
    )
log.info("%d templates, θ from %.2f to %.2f Å", len(rows), ensemble.theta_A[0], ensemble.theta_A[-1])
