"""The templates rule: a conformational ensemble ordered by θ (Å), from normal modes, an MD trajectory or the
user's frames; one PDB per template, a θ table and ``ensemble.npz``."""

from __future__ import annotations

import glob
import logging
import resource
import time

import numpy as np
import pandas as pd
import prody

from cryoflow.ensemble import templates
from cryoflow.errors import InputError
from cryoflow.io import structure
from cryoflow.io.fileio import write_npz, write_tsv
from cryoflow.job import Job
from cryoflow.physics import theta

log = logging.getLogger("cryoflow.templates")


def normal_modes(atoms: prody.AtomGroup, cfg: dict) -> templates.Ensemble:
    """``templates.method: nma``: the ensemble along the configured modes, with collectivity warnings."""
    nma = cfg["nma"]
    start = time.perf_counter()
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
    collectivity = ensemble.collectivity or {}  # per mode: normal-mode ensembles always carry it
    collective = [m for m, k in collectivity.items() if k >= templates.LOCALIZED]
    for mode in sorted(set(nma["modes"])):
        kappa = collectivity[mode]
        log.info("mode %d: collectivity %.3f", mode, kappa)
        if kappa < templates.LOCALIZED:
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
    return ensemble


def frame_theta(atoms: prody.AtomGroup, frames: np.ndarray, cfg: dict) -> np.ndarray | None:
    """θ per frame where the config gives it (a θ table or a distance between two selections), else None."""
    if cfg["method"] == "ensemble" and cfg["ensemble"]["theta_tsv"]:
        path = cfg["ensemble"]["theta_tsv"]
        table = pd.read_csv(path, sep="\t")
        if "theta_A" not in table.columns:
            raise InputError(f"{path}: no theta_A column (templates.ensemble.theta_tsv)")
        return table["theta_A"].to_numpy(float)
    if cfg["distance_selections"]:
        distance = templates.selection_distance(atoms, frames, cfg["distance_selections"])
        log.info(
            "θ = distance between %s and %s: %.2f to %.2f Å",
            *cfg["distance_selections"],
            distance.min(),
            distance.max(),
        )
        return distance
    return None


def frames_ensemble(atoms: prody.AtomGroup, cfg: dict, trajectory: str | None, topology: str | None):
    """``templates.method: md`` (the md rule's trajectory and prepared structure) or ``ensemble`` (the user's
    frames): the templates picked along θ."""
    start = time.perf_counter()
    if cfg["method"] == "md":
        frames, labels = templates.load_frames(atoms, trajectory=trajectory, topology=topology)
    else:
        user = cfg["ensemble"]
        files = sorted(f for pattern in user["pdb_files"] for f in glob.glob(pattern))
        frames, labels = templates.load_frames(atoms, files, user["trajectory"], user["topology"], user["stride"])
    ensemble, picked = templates.user_ensemble(
        atoms.getCoords(), frames, cfg["n_templates"], frame_theta(atoms, frames, cfg)
    )
    for i, frame in enumerate(picked):
        log.info(
            "template %03d: %s, θ = %.2f Å, RMSD %.2f Å",
            i,
            labels[frame],
            ensemble.theta_A[i],
            ensemble.displacement_A[i],
        )
    log.info("%d frames read in %.1f s", len(frames), time.perf_counter() - start)
    return ensemble


def write_ensemble(
    ensemble: templates.Ensemble, atoms: prody.AtomGroup, beads: str, pdbs: list[str], table: str, npz: str
) -> None:
    """One PDB per template, the θ table (TSV) and ``ensemble.npz`` (coords_A, theta_A, weights, mode, rmsd_A)."""
    for path, coords in zip(pdbs, ensemble.coords):
        structure.write_pdb(path, atoms, coords)
    write_tsv(table, ensemble.table_rows())
    write_npz(
        npz,
        coords_A=ensemble.coords.astype(np.float32),
        theta_A=ensemble.theta_A,
        weights=structure.bead_weights(atoms, beads),
        mode=ensemble.mode,
        rmsd_A=templates.rmsd_matrix(ensemble.coords),
    )


def run(job: Job) -> None:
    job.start_log()
    cfg = job.params.templates
    atoms = structure.load_structure(job.input.pdb)
    if cfg["method"] == "nma":
        ensemble = normal_modes(atoms, cfg)
    else:
        ensemble = frames_ensemble(atoms, cfg, job.input.get("trajectory"), job.input.get("prepared"))
    output = job.output
    write_ensemble(ensemble, atoms, job.params.beads, output.pdbs, output.table, output.ensemble)
    log.info("%d templates, θ range %s Å", len(ensemble.theta_A), theta.range_of(ensemble.theta_A))
