"""Rule templates: normal-mode ensemble ordered by θ (Å); PDBs, a θ table and ensemble.npz."""

import csv
import glob
import resource
import time

import numpy as np
import pandas as pd

from cryoflow.ensemble import templates
from cryoflow.errors import InputError
from cryoflow.io import structure
from cryoflow.io.fileio import atomic_path
from cryoflow.logs import configure
from cryoflow.physics import theta

log = configure(snakemake.log[0])
cfg = snakemake.params.templates
beads = snakemake.params.beads
atoms = structure.load_structure(snakemake.input.pdb)
start = time.perf_counter()
if cfg["method"] == "nma":
    nma = cfg["nma"]
    n_ca = int((atoms.getNames() == "CA").sum())
    build = templates.normal_mode_grid if cfg["theta_dims"] == 2 else templates.normal_mode_ensemble
    ensemble = build(
        atoms, cfg["n_templates"], tuple(nma["modes"]), nma["max_rmsd_A"], nma["cutoff_A"], nma["spring_constant"]
    )
    log.info(
        "normal modes of %d CA (%s Hessian) in %.1f s; peak memory %.0f MiB",
        n_ca,
        "sparse" if n_ca > templates.SPARSE_FROM_CA else "dense",
        time.perf_counter() - start,
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    )
    for mode in sorted(set(nma["modes"])):
        kappa = ensemble.collectivity[mode]
        log.info("mode %d: collectivity %.3f", mode, kappa)
        if kappa < templates.LOCALIZED:
            collective = [m for m, k in ensemble.collectivity.items() if k >= templates.LOCALIZED]
            log.warning(
                "mode %d moves a few beads only (collectivity %.3f < %.1f): the templates barely differ in "
                "projection and the model cannot learn θ; collective modes among 1-%d: %s "
                "(templates.nma.modes)",
                mode,
                kappa,
                templates.LOCALIZED,
                max(nma["modes"]),
                collective or "none, ask for higher modes",
            )
else:
    if cfg["method"] == "md":  # the trajectory of rule md, its prepared structure as topology
        frames, labels = templates.load_frames(
            atoms, trajectory=snakemake.input.trajectory, topology=snakemake.input.prepared
        )
    else:
        user = cfg["ensemble"]
        files = sorted(f for pattern in user["pdb_files"] for f in glob.glob(pattern))
        frames, labels = templates.load_frames(atoms, files, user["trajectory"], user["topology"], user["stride"])
    frame_theta = None
    if cfg["method"] == "ensemble" and cfg["ensemble"]["theta_tsv"]:
        path = cfg["ensemble"]["theta_tsv"]
        table = pd.read_csv(path, sep="\t")
        if "theta_A" not in table.columns:
            raise InputError(f"{path}: no theta_A column (templates.ensemble.theta_tsv)")
        frame_theta = table["theta_A"].to_numpy(float)
    elif cfg["distance_selections"]:
        frame_theta = templates.selection_distance(atoms, frames, cfg["distance_selections"])
        log.info(
            "θ = distance between %s and %s: %.2f to %.2f Å",
            *cfg["distance_selections"],
            frame_theta.min(),
            frame_theta.max(),
        )
    ensemble, picked = templates.user_ensemble(atoms.getCoords(), frames, cfg["n_templates"], frame_theta)
    for i, frame in enumerate(picked):
        log.info(
            "template %03d: %s, θ = %.2f Å, RMSD %.2f Å",
            i,
            labels[frame],
            ensemble.theta_A[i],
            ensemble.displacement_A[i],
        )
    log.info("%d frames read in %.1f s", len(frames), time.perf_counter() - start)
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
        rmsd_A=templates.rmsd_matrix(ensemble.coords),
    )
log.info("%d templates, θ range %s Å", len(rows), theta.range_of(ensemble.theta_A))
