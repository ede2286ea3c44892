import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from cryoflow import structure, templates
from cryoflow.fileio import InputError


def test_kabsch_rmsd_ignores_rigid_motion():
    rng = np.random.default_rng(0)
    xyz = rng.normal(size=(50, 3)) * 10
    moved = Rotation.random(random_state=1).apply(xyz) + np.array([3.0, -7.0, 12.0])
    assert templates.kabsch_rmsd(moved, xyz) == pytest.approx(0.0, abs=1e-9)
    noisy = xyz + rng.normal(size=xyz.shape) * 0.5
    # 0.5 Å per coordinate is 0.87 Å per atom; superposition absorbs 6 of the 150 degrees of freedom
    assert 0.8 < templates.kabsch_rmsd(noisy, xyz) < 0.5 * np.sqrt(3) + 0.05


def test_ensemble_is_ordered_with_reference_at_zero(adk_ca):
    ens = templates.normal_mode_ensemble(adk_ca, 9, (1, 2), 5.0)
    assert ens.coords.shape == (9, 214, 3)
    assert np.all(np.diff(ens.theta_A) > 0)
    ref = int(np.flatnonzero(ens.mode == 0)[0])
    assert ens.theta_A[ref] == 0.0
    np.testing.assert_allclose(ens.coords[ref], adk_ca.getCoords())
    # γ = -1 on the first mode's side, +1 on the second's; |θ| = RMSD to the reference
    assert np.all(ens.mode[ens.theta_A < 0] == 1) and np.all(ens.mode[ens.theta_A > 0] == 2)
    for xyz, theta in zip(ens.coords, ens.theta_A):
        assert abs(theta) == pytest.approx(templates.kabsch_rmsd(xyz, ens.coords[ref]), abs=1e-9)
    # normal modes carry no rigid-body motion, so the applied displacement is the RMSD
    np.testing.assert_allclose(np.abs(ens.theta_A), ens.displacement_A, rtol=0.01)
    assert ens.theta_A[0] == pytest.approx(-5.0, rel=0.01) and ens.theta_A[-1] == pytest.approx(5.0, rel=0.01)


def test_first_normal_mode_of_open_adk_closes_towards_1ake(adk_ca, data_dir):
    """The textbook check: the lowest ANM mode of open ADK (4AKE) moves it towards closed ADK (1AKE)."""
    closed = structure.select_atoms(structure.load_structure(data_dir / "1ake_chainA.pdb"), ["A"], "CA").getCoords()
    start = templates.kabsch_rmsd(adk_ca.getCoords(), closed)
    assert start == pytest.approx(7.1, abs=0.1)
    ens = templates.normal_mode_ensemble(adk_ca, 11, (1, 2), 6.0)
    along_mode_1 = [templates.kabsch_rmsd(c, closed) for c in ens.coords[ens.theta_A <= 0]]
    assert min(along_mode_1) < start - 2.5


def test_heavy_atoms_follow_their_residue(root):
    atoms = structure.load_structure(root / "resources/structures/4ake.pdb")
    heavy = structure.select_atoms(atoms, ["A"], "heavy")
    ens = templates.normal_mode_ensemble(heavy, 3, (1, 2), 4.0)
    shift = ens.coords[0] - ens.coords[1]
    resnums = heavy.getResnums()
    for r in (10, 100, 200):
        block = shift[resnums == r]
        np.testing.assert_allclose(block, np.broadcast_to(block[0], block.shape), atol=1e-9)
    assert ens.theta_A[0] == pytest.approx(-4.0, rel=0.02)


def test_template_counts_and_errors(adk_ca):
    amplitudes, sides = templates.template_amplitudes(2, 3.0)
    assert list(sides) == [0.0, 1.0] and list(amplitudes) == [0.0, 3.0]
    amplitudes, sides = templates.template_amplitudes(6, 3.0)
    assert list(sides) == [-1, -1, 0, 1, 1, 1]
    with pytest.raises(InputError, match="n_templates"):
        templates.template_amplitudes(1, 3.0)
    with pytest.raises(InputError, match="modes"):
        templates.normal_mode_ensemble(adk_ca, 5, (0, 1), 3.0)
