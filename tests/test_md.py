"""Molecular dynamics templates: PDBFixer preparation and a short OpenMM run on a 30-residue fragment."""

import mdtraj
import numpy as np
import prody
import pytest
from conftest import schema_defaults

from cryoflow.ensemble import md, templates
from cryoflow.errors import InputError
from cryoflow.io import structure


def md_settings(**overrides):
    return md.MDSettings(**{**schema_defaults("templates", "md"), "seed": 0, **overrides})


ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def short_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("md")
    atoms = structure.load_structure(ROOT / "resources" / "structures" / "4ake.pdb")
    fragment = atoms.select("chain A and (resnum 1 to 30 or resname HOH)").copy()
    assert "HOH" in set(fragment.getResnames())
    noisy = fragment.select("not (resnum 2 and name CG CD NE CZ NH1 NH2)").copy()  # Arg 2 loses its side chain
    prody.writePDB(str(folder / "fragment.pdb"), noisy)
    settings = md_settings(
        minimize_iterations=50, equilibration_ps=0.1, production_ps=1.0, frame_interval_ps=0.1, platform="CPU", seed=3
    )
    facts = md.run(folder / "fragment.pdb", folder / "prepared.pdb", folder / "run.dcd", settings)
    return folder, facts, fragment


def test_preparation_removes_water_and_completes_residues(short_run):
    folder, facts, _ = short_run
    prepared = mdtraj.load(str(folder / "prepared.pdb"))
    residues = [r.name for r in prepared.topology.residues]
    assert "HOH" not in residues and len(residues) == 30
    arg2 = [a.name for a in prepared.topology.atoms if a.residue.resSeq == 2]
    assert {"CZ", "NH1", "NH2", "HE"} <= set(arg2)  # heavy atoms rebuilt, hydrogens added
    assert facts["platform"] == "CPU" and facts["frames"] == 10 and facts["atoms"] == prepared.n_atoms


def test_trajectory_gives_templates_ordered_by_rmsd(short_run):
    folder, _, fragment = short_run
    reference = structure.select_atoms(fragment, ["A"], "CA")
    frames, labels = templates.load_frames(reference, trajectory=folder / "run.dcd", topology=folder / "prepared.pdb")
    assert frames.shape == (10, 30, 3) and labels[3] == "run.dcd:3"
    rmsd = np.array([templates.kabsch_rmsd(f, reference.getCoords()) for f in frames])
    assert np.all((rmsd > 0.05) & (rmsd < 4.0))  # the structure moves, thermally, and stays folded
    ensemble, picked = templates.user_ensemble(reference.getCoords(), frames, 3)
    assert np.all(np.diff(ensemble.theta_A) > 0)
    distance = templates.selection_distance(reference, frames, ["resnum 1 to 5", "resnum 25 to 30"])
    assert distance.shape == (10,) and np.all(distance > 5.0)
    with pytest.raises(InputError, match="selects no bead"):
        templates.selection_distance(reference, frames, ["resnum 500", "resnum 1"])


def test_unknown_platform_is_refused():
    with pytest.raises(InputError, match="platform 'Nonexistent' not available"):
        md.select_platform("Nonexistent")


def test_explicit_solvent_run_writes_the_solute_only(short_run, tmp_path):
    folder, _, _ = short_run
    settings = md_settings(
        solvent="explicit",
        minimize_iterations=10,
        equilibration_ps=0.01,
        production_ps=0.04,
        frame_interval_ps=0.02,
        platform="CPU",
        padding_nm=0.6,
        seed=3,
    )
    facts = md.run(folder / "fragment.pdb", tmp_path / "prepared.pdb", tmp_path / "run.dcd", settings)
    traj = mdtraj.load(str(tmp_path / "run.dcd"), top=str(tmp_path / "prepared.pdb"))
    assert traj.n_frames == 2 and traj.n_atoms < facts["atoms"]  # water was simulated, not written
    assert {r.name for r in traj.topology.residues}.isdisjoint({"HOH", "NA", "CL"})
