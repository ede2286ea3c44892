import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from cryoflow.ensemble import templates
from cryoflow.errors import InputError
from cryoflow.io import structure


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


def test_one_mode_twice_gives_its_two_directions(adk_ca):
    """modes [1, 1]: θ < 0 moves against mode 1, θ > 0 along it, so mirrored templates differ (the hsp90 example)."""
    ens = templates.normal_mode_ensemble(adk_ca, 7, (1, 1), 4.0)
    ref = ens.coords[3]
    assert np.all(ens.mode[ens.theta_A != 0] == 1)
    minus, plus = ens.coords[0] - ref, ens.coords[-1] - ref
    np.testing.assert_allclose(minus, -plus, atol=1e-9)  # the same displacement, opposite sign
    assert templates.kabsch_rmsd(ens.coords[0], ens.coords[-1]) > 7.0  # ≈ 2 × 4 Å apart, not one structure twice
    assert ens.theta_A[0] == pytest.approx(-4.0, rel=0.01) and ens.theta_A[-1] == pytest.approx(4.0, rel=0.01)


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


def test_sparse_shift_invert_modes_match_dense_diagonalization(adk_ca):
    import prody

    from cryoflow.ensemble.templates import anm_hessian, lowest_modes_sparse

    coords = adk_ca.getCoords().astype(float)
    dense = prody.ANM("dense")
    dense.buildHessian(coords, cutoff=15.0)
    dense.calcModes(n_modes=4, zeros=False)
    values, vectors = lowest_modes_sparse(anm_hessian(coords, 15.0, 1.0), 4)
    np.testing.assert_allclose(values, dense.getEigvals(), rtol=1e-6)
    overlaps = np.abs(np.sum(vectors * dense.getEigvecs(), axis=0))
    np.testing.assert_allclose(overlaps, 1.0, atol=1e-6)


def test_anm_hessian_equals_prodys_with_pairs_at_the_cutoff_included(adk_ca):
    import prody

    coords = adk_ca.getCoords().astype(float)
    for cutoff, gamma in ((15.0, 1.0), (9.0, 2.5)):
        reference = prody.ANM("reference")
        reference.buildHessian(coords, cutoff=cutoff, gamma=gamma, sparse=True)
        difference = templates.anm_hessian(coords, cutoff, gamma) - reference.getHessian()
        assert abs(difference).max() < 1e-10
    # two beads exactly one cutoff apart are springs; a hair further they are not
    pair = np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 10.0]])
    assert templates.anm_hessian(pair, 10.0, 1.0)[2, 5] == -1.0
    assert templates.anm_hessian(pair, 9.999, 1.0).count_nonzero() == 0
    # a CA on top of another (overlapping copies) has no spring direction: one clear error, not NaN modes
    doubled = adk_ca.copy() + adk_ca.copy()
    with pytest.raises(InputError, match=r"the CA of residues A\d+ and A\d+ sit at the same position \(214 such"):
        templates.atom_modes(doubled, 2, 15.0, 1.0)
    # rows sum to zero: a rigid translation costs no energy
    row_sums = np.asarray(templates.anm_hessian(coords, 15.0, 1.0).sum(axis=1)).ravel()
    np.testing.assert_allclose(row_sums, 0.0, atol=1e-12)


def test_assembly_with_long_chain_ids_selects_and_writes_pdb(tmp_path, adk_ca):
    import prody

    from cryoflow.io import structure

    parts = []
    for i, chain in enumerate(["AA", "AB", "A-2"]):
        copy = adk_ca.copy()
        copy.setChids([chain] * copy.numAtoms())
        copy.setCoords(copy.getCoords() + 45.0 * i)
        parts.append(copy)
    prody.writeMMCIF(str(tmp_path / "assembly.cif"), parts[0] + parts[1] + parts[2])
    atoms = structure.load_structure(tmp_path / "assembly.cif")
    assert sorted(set(atoms.getChids())) == ["A-2", "AA", "AB"]  # author ids, not label_asym_id
    picked = structure.select_atoms(atoms, ["AB", "A-2"], "CA")
    assert picked.numAtoms() == 2 * adk_ca.numAtoms()
    renamed = structure.write_pdb(tmp_path / "ref.pdb", picked)
    assert renamed == {"AB": "A", "A-2": "B"}
    back = structure.load_structure(tmp_path / "ref.pdb")
    assert sorted(set(back.getChids())) == ["A", "B"] and back.numAtoms() == picked.numAtoms()
    with pytest.raises(InputError, match="62 chain ids"):
        structure.pdb_chain_map([f"C{i}" for i in range(63)])


def deformed_frames(atoms, amplitudes_A, seed=0):
    """Copies of ``atoms`` deformed along ANM mode 1 by each amplitude, then rigidly moved at random."""
    ref = atoms.getCoords().astype(float)
    mode = templates.anm_modes(ref, 1, 15.0, 1.0)[0]
    rotations = Rotation.random(len(amplitudes_A), random_state=seed).as_matrix()
    return np.stack([(ref + a * np.sqrt(len(ref)) * mode) @ r.T + 30.0 for a, r in zip(amplitudes_A, rotations)])


def test_user_ensemble_orders_frames_by_rmsd_and_spaces_templates_evenly(adk_ca):
    amplitudes = np.random.default_rng(1).permutation(np.linspace(0.0, 6.0, 25))
    frames = deformed_frames(adk_ca, amplitudes)
    ensemble, picked = templates.user_ensemble(adk_ca.getCoords(), frames, 5)
    np.testing.assert_allclose(np.sort(amplitudes[picked]), [0.0, 1.5, 3.0, 4.5, 6.0], atol=1e-9)
    assert np.all(np.diff(ensemble.theta_A) > 0) and ensemble.theta_A[0] == pytest.approx(0.0, abs=1e-6)
    np.testing.assert_allclose(ensemble.theta_A, amplitudes[picked], rtol=1e-6, atol=1e-6)  # RMSD = amplitude
    np.testing.assert_allclose(ensemble.coords[0], adk_ca.getCoords(), atol=1e-6)  # superposed on the reference
    signed, _ = templates.user_ensemble(adk_ca.getCoords(), frames, 5, theta_A=-amplitudes)
    assert signed.theta_A[0] == pytest.approx(-6.0)
    with pytest.raises(InputError, match="only 3 distinct templates"):
        templates.user_ensemble(adk_ca.getCoords(), frames[:3], 5)


def test_load_frames_from_pdb_files_and_a_trajectory_matches_atoms(tmp_path, adk_ca):
    import mdtraj

    frames = deformed_frames(adk_ca, [1.0, 2.0, 3.0])
    paths = []
    for i, xyz in enumerate(frames):
        copy = adk_ca.copy()
        copy.setCoords(xyz)
        copy.setChids(["X"] * copy.numAtoms())  # chain ids that differ from the reference's
        paths.append(tmp_path / f"model_{i}.pdb")
        structure.write_pdb(paths[-1], copy)
    coords, labels = templates.load_frames(adk_ca, paths)
    assert labels == ["model_0.pdb", "model_1.pdb", "model_2.pdb"]
    np.testing.assert_allclose(coords, frames, atol=2e-3)  # PDB precision
    traj = mdtraj.load(str(paths[0]))
    traj.xyz = (frames / 10.0).astype(np.float32)
    traj.time = np.arange(3.0)
    traj.save_dcd(str(tmp_path / "run.dcd"))
    coords, labels = templates.load_frames(adk_ca, trajectory=tmp_path / "run.dcd", topology=paths[0], stride=2)
    assert labels == ["run.dcd:0", "run.dcd:2"]
    np.testing.assert_allclose(coords, frames[[0, 2]], atol=2e-3)
    other = adk_ca.copy()
    other.setResnums(other.getResnums() + 1000)
    structure.write_pdb(tmp_path / "other.pdb", other)
    with pytest.raises(InputError, match=r"other.pdb: atom CA of residue 1 \(chain A\) of the reference is not found"):
        templates.load_frames(adk_ca, [tmp_path / "other.pdb"])


def test_rmsd_matrix_is_symmetric_and_zero_on_the_diagonal(adk_ca):
    ensemble = templates.normal_mode_ensemble(adk_ca, 5, (1, 2), 4.0)
    rmsd = templates.rmsd_matrix(ensemble.coords)
    np.testing.assert_allclose(rmsd, rmsd.T)
    np.testing.assert_allclose(np.diag(rmsd), 0.0, atol=1e-6)
    np.testing.assert_allclose(rmsd[2], np.abs(ensemble.theta_A), atol=1e-6)  # the reference row is |θ|


def test_sparse_path_builds_the_same_ensemble(adk_ca, monkeypatch):
    dense = templates.normal_mode_ensemble(adk_ca, 5, (1, 2), 4.0)
    monkeypatch.setattr(templates, "SPARSE_FROM_CA", 0)
    sparse = templates.normal_mode_ensemble(adk_ca, 5, (1, 2), 4.0)
    np.testing.assert_allclose(sparse.theta_A, dense.theta_A, atol=1e-6)
    np.testing.assert_allclose(sparse.coords, dense.coords, atol=1e-4)


def test_two_modes_on_a_grid(adk_ca):
    """θ = (θ₁, θ₂): template (i, j) moves the reference along both modes; each axis is a 1-D mode coordinate."""
    grid = templates.normal_mode_grid(adk_ca, 5, (1, 2), 4.0)
    assert grid.coords.shape == (25, 214, 3) and grid.theta_A.shape == (25, 2)
    t1, t2 = grid.theta_A.reshape(5, 5, 2).transpose(2, 0, 1)
    assert np.all(t1 == t1[:, :1]) and np.all(t2 == t2[:1, :])  # row-major: θ₁ by row, θ₂ by column
    np.testing.assert_allclose(t1[:, 0], [-4.0, -2.0, 0.0, 2.0, 4.0], rtol=0.01)
    ref = adk_ca.getCoords()
    np.testing.assert_allclose(grid.coords[12], ref)  # the centre of the grid is the reference
    for k, theta in enumerate(grid.theta_A):
        if theta[1] == 0.0:  # along the first mode alone: |θ₁| is the RMSD to the reference
            assert templates.kabsch_rmsd(grid.coords[k], ref) == pytest.approx(abs(theta[0]), abs=1e-6)
    # orthogonal modes: displacements add in quadrature, RMSD² = θ₁² + θ₂²
    np.testing.assert_allclose(
        grid.displacement_A, np.hypot(grid.theta_A[:, 0], grid.theta_A[:, 1]), rtol=0.02, atol=1e-6
    )
    # the corner (+4, +4) Å (index 4·5 + 4) is the sum of the moves to (+4, 0) (index 22) and (0, +4) (index 14)
    np.testing.assert_allclose(grid.coords[24] - ref, (grid.coords[22] - ref) + (grid.coords[14] - ref), atol=1e-9)
    rows = grid.table_rows()
    assert list(rows[0]) == ["template", "displacement_A", "theta1_A", "theta2_A"]
    with pytest.raises(InputError, match="two different modes"):
        templates.normal_mode_grid(adk_ca, 3, (2, 2), 4.0)


def test_collectivity_tells_a_collective_mode_from_a_localized_one(adk_ca):
    n = 100
    uniform = np.tile(np.array([1.0, 0.0, 0.0]), (n, 1))[None]
    one_bead = np.zeros((1, n, 3))
    one_bead[0, 7] = [0.0, 1.0, 0.0]
    assert templates.collectivity(uniform)[0] == pytest.approx(1.0)
    assert templates.collectivity(one_bead)[0] == pytest.approx(1.0 / n)
    ens = templates.normal_mode_ensemble(adk_ca, 5, (1, 2), 4.0)
    assert set(ens.collectivity) == {1, 2} and min(ens.collectivity.values()) > templates.LOCALIZED  # ADK's hinges


def test_modes_beyond_3n_minus_6_are_refused_naming_the_key():
    four = np.array([[0.0, 0, 0], [3.8, 0, 0], [0, 3.8, 0], [0, 0, 3.8]])  # 4 CA: 3·4 − 6 = 6 internal modes
    assert templates.anm_modes(four, 6, 15.0, 1.0).shape == (6, 4, 3)
    with pytest.raises(InputError, match="templates.nma.modes: mode 7 asked for, but 4 CA atoms have 6 internal"):
        templates.anm_modes(four, 7, 15.0, 1.0)
