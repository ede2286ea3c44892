"""Conformational ensembles ordered along a coordinate θ (in Å), 1-D or on a 2-D grid.

Normal modes: θ = γ·RMSD(template, reference) after optimal superposition,
with γ = -1 on the side of the first chosen normal mode and γ = +1 on the
side of the second; the reference sits at θ = 0. User ensembles (PDB files
or a trajectory): θ = RMSD to the reference, or values the user gives, and
templates evenly spaced in θ. On a 2-D grid (``normal_mode_grid``) two
modes move the reference jointly and θ = (θ₁, θ₂), one signed RMSD per mode.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import prody

from cryoflow.errors import InputError


def superpose(mobile: np.ndarray, target: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """``mobile`` (N, 3) moved onto ``target`` by the (weighted) optimal rotation and translation (Kabsch)."""
    mobile = np.asarray(mobile, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    w = np.ones(len(mobile)) if weights is None else np.asarray(weights, dtype=np.float64)
    w = w / w.sum()
    a = mobile - w @ mobile
    b = target - w @ target
    u, _, vt = np.linalg.svd((a * w[:, None]).T @ b)
    d = np.sign(np.linalg.det(vt.T @ u.T))
    rotation = vt.T @ np.diag([1.0, 1.0, d]) @ u.T
    return a @ rotation.T + w @ target


def kabsch_rmsd(mobile: np.ndarray, target: np.ndarray, weights: np.ndarray | None = None) -> float:
    """RMSD in Å between two (N, 3) coordinate sets after optimal superposition."""
    w = np.ones(len(mobile)) if weights is None else np.asarray(weights, dtype=np.float64)
    diff = superpose(mobile, target, w) - np.asarray(target, dtype=np.float64)
    return float(np.sqrt((w / w.sum()) @ np.sum(diff**2, axis=1)))


def rmsd_matrix(coords: np.ndarray) -> np.ndarray:
    """Pairwise RMSD (T, T) in Å between templates (T, N, 3), each pair after optimal superposition."""
    n = len(coords)
    out = np.zeros((n, n))
    for i in range(n):
        for j in range(i + 1, n):
            out[i, j] = out[j, i] = kabsch_rmsd(coords[i], coords[j])
    return out


SPARSE_FROM_CA = 1000  # above this many CA the Hessian is kept sparse and solved by shift-invert Lanczos


def lowest_modes_sparse(hessian, n_modes: int) -> tuple[np.ndarray, np.ndarray]:
    """Lowest ``n_modes`` non-zero eigenpairs of a sparse ANM Hessian (3N, 3N).

    Shift-invert Lanczos just below zero (one sparse LU factorization)
    converges on the six rigid-body zero modes and the slowest internal
    modes at once; the six smallest eigenvalues are dropped. Minutes of
    dense diagonalization become seconds for thousands of CA.
    """
    from scipy.sparse.linalg import eigsh

    hessian = hessian.tocsc()
    shift = -1e-6 * float(hessian.diagonal().mean())
    values, vectors = eigsh(hessian, k=n_modes + 6, sigma=shift, which="LM")
    order = np.argsort(values)[6:]
    return values[order], vectors[:, order]


def anm_hessian(coords: np.ndarray, cutoff_A: float, spring_constant: float):
    """The ANM Hessian (3N, 3N) as a sparse matrix: for each pair of beads within ``cutoff_A`` (inclusive),
    the off-diagonal 3×3 block −γ·r rᵀ/|r|² (r the pair's separation) and its negative added to both
    diagonal blocks. ProDy's ``ANM.buildHessian`` makes the same matrix with a Python loop over beads
    (81 s for apoferritin's 4 080 CA on 2 cores); here the pairs come from a k-d tree at once.
    """
    from scipy.sparse import coo_matrix
    from scipy.spatial import cKDTree

    coords = np.asarray(coords, dtype=np.float64)
    n = len(coords)
    pairs = cKDTree(coords).query_pairs(cutoff_A, output_type="ndarray")
    i, j = pairs[:, 0], pairs[:, 1]
    r = coords[j] - coords[i]
    blocks = -spring_constant * r[:, :, None] * r[:, None, :] / np.sum(r * r, axis=1)[:, None, None]
    diagonal = np.zeros((n, 3, 3))
    np.add.at(diagonal, i, -blocks)
    np.add.at(diagonal, j, -blocks)
    beads = np.concatenate([i, j, np.arange(n)]), np.concatenate([j, i, np.arange(n)])
    values = np.concatenate([blocks, blocks, diagonal])
    axis = np.arange(3)
    rows = (3 * beads[0][:, None, None] + axis[None, :, None]).repeat(3, axis=2)
    cols = (3 * beads[1][:, None, None] + axis[None, None, :]).repeat(3, axis=1)
    return coo_matrix((values.ravel(), (rows.ravel(), cols.ravel())), shape=(3 * n, 3 * n)).tocsc()


def anm_modes(ca_coords: np.ndarray, n_modes: int, cutoff_A: float, spring_constant: float) -> np.ndarray:
    """Lowest ``n_modes`` non-trivial ANM modes as unit vectors of shape (n_modes, N, 3).

    Dense diagonalization up to ``SPARSE_FROM_CA`` CA, sparse shift-invert
    above. The sign of each mode is fixed so that its largest component is
    positive, which makes the ensemble reproducible across LAPACK builds.
    """
    coords = np.asarray(ca_coords, dtype=np.float64)
    internal = 3 * len(coords) - 6  # 3N coordinates less three translations and three rotations
    if n_modes > internal:
        raise InputError(
            f"templates.nma.modes: mode {n_modes} asked for, but {len(coords)} CA atoms have "
            f"{max(internal, 0)} internal normal modes; choose modes 1 to {max(internal, 0)}"
        )
    if len(coords) > SPARSE_FROM_CA:
        _, eigenvectors = lowest_modes_sparse(anm_hessian(coords, cutoff_A, spring_constant), n_modes)
    else:
        anm = prody.ANM("reference")
        anm.buildHessian(coords, cutoff=cutoff_A, gamma=spring_constant)
        anm.calcModes(n_modes=n_modes, zeros=False)
        eigenvectors = anm.getEigvecs()
    vectors = np.ascontiguousarray(eigenvectors.T).reshape(n_modes, -1, 3)
    for vector in vectors:
        flat = vector.ravel()
        if flat[np.argmax(np.abs(flat))] < 0:
            vector *= -1.0
    return vectors


def extend_to_atoms(ca_vectors: np.ndarray, residue_of_atom: np.ndarray) -> np.ndarray:
    """Give every atom the displacement of its residue's CA, renormalized to unit norm."""
    extended = ca_vectors[:, residue_of_atom, :]
    norms = np.sqrt(np.sum(extended**2, axis=(1, 2), keepdims=True))
    return extended / norms


@dataclass
class Ensemble:
    """Templates (T, N, 3) in Å, ordered by θ (T,) or on a row-major 2-D grid θ (T, 2), with their provenance."""

    coords: np.ndarray
    theta_A: np.ndarray
    mode: np.ndarray  # 1-based mode index per template, 0 for the reference (and on a 2-D grid)
    displacement_A: np.ndarray  # RMSD of the applied displacement before superposition
    collectivity: dict | None = None  # normal modes: {1-based mode: collectivity} of the modes computed

    def table_rows(self) -> list[dict]:
        """One row per template: index, mode and θ (``theta_A``), or θ₁ and θ₂ (``theta1_A``, ``theta2_A``) on a
        2-D grid, and the displacement."""
        rows = []
        for i, theta in enumerate(self.theta_A):
            row: dict[str, float] = {"template": i} if np.ndim(theta) else {"template": i, "mode": int(self.mode[i])}
            row["displacement_A"] = round(float(self.displacement_A[i]), 4)
            if np.ndim(theta) == 0:
                row["theta_A"] = round(float(theta), 4)
            else:
                row.update({f"theta{d + 1}_A": round(float(t), 4) for d, t in enumerate(theta)})
            rows.append(row)
        return rows


def template_amplitudes(n_templates: int, max_rmsd_A: float) -> tuple[np.ndarray, np.ndarray]:
    """Displacement RMSDs and sides (-1, 0, +1) for ``n_templates`` ordered templates.

    (n_templates - 1) // 2 templates go to the negative side, the rest minus
    the reference to the positive side, each side evenly spaced up to
    ``max_rmsd_A``.
    """
    if n_templates < 2:
        raise InputError(f"templates.n_templates must be at least 2, got {n_templates}")
    n_neg = (n_templates - 1) // 2
    n_pos = n_templates - 1 - n_neg
    neg = max_rmsd_A * np.arange(n_neg, 0, -1) / max(n_neg, 1)
    pos = max_rmsd_A * np.arange(1, n_pos + 1) / n_pos
    amplitudes = np.concatenate([neg, [0.0], pos])
    sides = np.concatenate([-np.ones(n_neg), [0.0], np.ones(n_pos)])
    return amplitudes, sides


def atom_modes(atoms: prody.AtomGroup, n_modes: int, cutoff_A: float, spring_constant: float) -> np.ndarray:
    """The lowest ``n_modes`` ANM modes (n_modes, N, 3) for every atom: built on CA, other atoms follow their CA."""
    ref = atoms.getCoords().astype(np.float64)
    is_ca = atoms.getNames() == "CA"
    if is_ca.sum() < 3:
        raise InputError("structure: fewer than 3 CA atoms, cannot build a normal-mode model")
    from scipy.spatial import cKDTree

    overlapping = cKDTree(ref[is_ca]).query_pairs(1e-3, output_type="ndarray")
    if len(overlapping):  # a spring of zero length has no direction: the Hessian would be NaN
        label = [f"{c}{r}" for c, r in zip(atoms.getChids()[is_ca], atoms.getResnums()[is_ca])]
        first, second = overlapping[0]
        raise InputError(
            f"structure: the CA of residues {label[first]} and {label[second]} sit at the same position "
            f"({len(overlapping)} such pairs: overlapping copies?); select one copy"
        )
    ca_vectors = anm_modes(ref[is_ca], n_modes, cutoff_A, spring_constant)
    if is_ca.all():
        return ca_vectors
    residue_keys = list(zip(atoms.getChids(), atoms.getResnums(), atoms.getIcodes()))
    ca_index = {key: i for i, key in enumerate(k for k, ca in zip(residue_keys, is_ca) if ca)}
    missing = [key for key in residue_keys if key not in ca_index]
    if missing:
        raise InputError(f"structure: residue {missing[0]} has no CA atom; select beads: CA")
    return extend_to_atoms(ca_vectors, np.array([ca_index[k] for k in residue_keys]))


LOCALIZED = 0.1  # a mode with a lower collectivity moves a few beads only


def collectivity(vectors: np.ndarray) -> np.ndarray:
    """Collectivity κ (Brüschweiler 1995) of modes (M, N, 3): exp(−Σ uᵢ² ln uᵢ²) / N with uᵢ² each bead's
    share of the mode's squared displacement; 1 when every bead moves alike, 1/N when one bead moves."""
    u2 = (vectors**2).sum(axis=2)
    u2 = u2 / u2.sum(axis=1, keepdims=True)
    entropy = -(u2 * np.log(np.where(u2 > 0, u2, 1.0))).sum(axis=1)
    return np.exp(entropy) / vectors.shape[1]


def check_modes(modes) -> None:
    if len(modes) != 2 or min(modes) < 1:
        raise InputError(f"templates.nma.modes must be two 1-based mode numbers, got {list(modes)}")


def normal_mode_ensemble(
    atoms: prody.AtomGroup,
    n_templates: int,
    modes: tuple[int, int],
    max_rmsd_A: float,
    cutoff_A: float = 15.0,
    spring_constant: float = 1.0,
) -> Ensemble:
    """The paper's construction: deform the reference along two ANM modes.

    ``modes`` are 1-based indices among the non-trivial modes; the first is
    used for the negative side (γ = -1), the second for the positive side.
    The same mode twice gives both directions of that one mode: the negative
    side moves against the eigenvector. The ANM is built on CA atoms; other
    atoms follow their residue's CA.
    """
    check_modes(modes)
    ref = atoms.getCoords().astype(np.float64)
    vectors = atom_modes(atoms, max(modes), cutoff_A, spring_constant)
    amplitudes, sides = template_amplitudes(n_templates, max_rmsd_A)
    n_atoms = len(ref)
    coords, theta, mode_of = [], [], []
    for amplitude, side in zip(amplitudes, sides):
        mode = 0 if side == 0 else (modes[0] if side < 0 else modes[1])
        direction = -1.0 if side < 0 and modes[0] == modes[1] else 1.0
        xyz = ref if side == 0 else ref + direction * amplitude * np.sqrt(n_atoms) * vectors[mode - 1]
        coords.append(xyz)
        theta.append(side * kabsch_rmsd(xyz, ref))
        mode_of.append(mode)
    return Ensemble(
        coords=np.stack(coords),
        theta_A=np.asarray(theta),
        mode=np.asarray(mode_of, dtype=int),
        displacement_A=amplitudes,
        collectivity=dict(enumerate(collectivity(vectors).round(4).tolist(), start=1)),
    )


def normal_mode_grid(
    atoms: prody.AtomGroup,
    n_per_axis: int,
    modes: tuple[int, int],
    max_rmsd_A: float,
    cutoff_A: float = 15.0,
    spring_constant: float = 1.0,
) -> Ensemble:
    """Two ANM modes varied jointly: a grid of n_per_axis² templates at θ = (θ₁, θ₂) in Å.

    θ_k = γ·RMSD to the reference of the reference moved along mode k alone
    (γ the sign of the amplitude), so each axis is the 1-D coordinate of its
    mode; template (i, j), row-major, is the reference moved by amplitude i
    along the first mode and j along the second. Its ``displacement_A`` is
    its own RMSD to the reference; ``mode`` is 0 throughout.
    """
    check_modes(modes)
    if modes[0] == modes[1]:
        raise InputError(f"templates.nma.modes must be two different modes for a 2-D θ, got {list(modes)}")
    ref = atoms.getCoords().astype(np.float64)
    vectors = atom_modes(atoms, max(modes), cutoff_A, spring_constant)
    amplitudes, sides = template_amplitudes(n_per_axis, max_rmsd_A)
    signed = sides * amplitudes * np.sqrt(len(ref))
    moves = [signed[:, None, None] * vectors[mode - 1] for mode in modes]  # (n, N, 3) per axis
    axes = [sides * np.array([kabsch_rmsd(ref + move, ref) for move in along]) for along in moves]
    coords = (ref + moves[0][:, None] + moves[1][None, :]).reshape(-1, *ref.shape)
    t1, t2 = np.meshgrid(*axes, indexing="ij")
    return Ensemble(
        coords=coords,
        theta_A=np.stack([t1.ravel(), t2.ravel()], axis=1),
        mode=np.zeros(len(coords), dtype=int),
        displacement_A=np.array([kabsch_rmsd(xyz, ref) for xyz in coords]),
        collectivity=dict(enumerate(collectivity(vectors).round(4).tolist(), start=1)),
    )


def match_atoms(reference: prody.AtomGroup, keys: list[tuple], source) -> np.ndarray:
    """Index into ``keys`` ((chain, residue number, atom name) per atom of a user file) of each reference atom.

    Chains are matched when the file's chain ids cover the reference;
    otherwise (MD output often has none) residue number and atom name alone
    must identify the atom.
    """
    wanted = list(zip(reference.getChids(), reference.getResnums(), reference.getNames()))
    wanted = [(str(c), int(r), str(n)) for c, r, n in wanted]
    index = {key: i for i, key in enumerate(keys)}
    if all(key in index for key in wanted):
        return np.array([index[key] for key in wanted])
    loose: dict[tuple, list[int]] = {}
    for i, (_, resnum, name) in enumerate(keys):
        loose.setdefault((resnum, name), []).append(i)
    found = []
    for chain, resnum, name in wanted:
        hits = loose.get((resnum, name), [])
        if len(hits) != 1:
            what = "not found" if not hits else f"ambiguous ({len(hits)} atoms, chain ids differ from the reference)"
            raise InputError(f"{source}: atom {name} of residue {resnum} (chain {chain}) of the reference is {what}")
        found.append(hits[0])
    return np.array(found)


def load_frames(reference: prody.AtomGroup, pdb_files=(), trajectory=None, topology=None, stride: int = 1):
    """Coordinates (F, N, 3) in Å of the reference's atoms in user structures: PDB files or a trajectory.

    Read with mdtraj (PDB, mmCIF, DCD, XTC, TRR, NetCDF, H5 ...); atoms are
    matched to the reference by ``match_atoms``. Returns (coords, labels),
    a label per frame (file name or trajectory frame).
    """
    import mdtraj

    def keys_of(top):
        return [(str(a.residue.chain.chain_id or ""), int(a.residue.resSeq), a.name) for a in top.atoms]

    frames, labels = [], []
    try:
        if trajectory:
            traj = mdtraj.load(str(trajectory), top=str(topology) if topology else None, stride=stride)
            order = match_atoms(reference, keys_of(traj.topology), trajectory)
            frames.append(traj.xyz[:, order, :] * 10.0)  # nm → Å
            labels += [f"{Path(trajectory).name}:{i * stride}" for i in range(traj.n_frames)]
        for path in pdb_files:
            model = mdtraj.load(str(path))
            order = match_atoms(reference, keys_of(model.topology), path)
            frames.append(model.xyz[:1, order, :] * 10.0)
            labels.append(Path(path).name)
    except (OSError, ValueError, TypeError) as err:
        raise InputError(f"templates.ensemble: could not read {trajectory or pdb_files}: {err}") from err
    if not frames:
        raise InputError("templates.ensemble: give pdb_files or a trajectory")
    return np.concatenate(frames).astype(np.float64), labels


def selection_distance(reference: prody.AtomGroup, frames: np.ndarray, selections) -> np.ndarray:
    """Distance in Å between the centroids of two ProDy selections of the reference, in every frame (F, N, 3)."""
    centroids = []
    for text in selections:
        try:
            picked = reference.select(text)
        except prody.SelectionError as err:
            raise InputError(f"templates.distance_selections: {text!r} is not a ProDy selection: {err}") from err
        if picked is None:
            raise InputError(f"templates.distance_selections: {text!r} selects no bead of the reference")
        centroids.append(frames[:, picked.getIndices(), :].mean(axis=1))
    return np.linalg.norm(centroids[0] - centroids[1], axis=1)


def user_ensemble(reference: np.ndarray, frames: np.ndarray, n_templates: int, theta_A=None) -> tuple[Ensemble, list]:
    """N templates evenly spaced in θ from user frames (F, N, 3), superposed on the reference.

    θ is the RMSD to the reference after superposition (θ ≥ 0) unless
    ``theta_A`` (one value per frame, e.g. a distance or a signed RMSD)
    is given. For each of ``n_templates`` evenly spaced θ values the
    nearest frame is taken; the templates come back ordered by θ with the
    indices of the frames they come from.
    """
    reference = np.asarray(reference, dtype=np.float64)
    frames = np.stack([superpose(frame, reference) for frame in frames])
    rmsd = np.sqrt(np.mean(np.sum((frames - reference) ** 2, axis=2), axis=1))  # frames are superposed already
    theta = rmsd if theta_A is None else np.asarray(theta_A, dtype=np.float64)
    if len(theta) != len(frames):
        raise InputError(f"templates.ensemble.theta_tsv: {len(theta)} θ values for {len(frames)} frames")
    targets = np.linspace(theta.min(), theta.max(), n_templates)
    picked = [int(np.argmin(np.abs(theta - t))) for t in targets]
    if len(set(picked)) < n_templates:
        raise InputError(
            f"templates.n_templates = {n_templates}, but the ensemble's {len(frames)} frames give only "
            f"{len(set(picked))} distinct templates evenly spaced in θ; lower n_templates or add frames"
        )
    picked = sorted(picked, key=lambda i: theta[i])
    ensemble = Ensemble(
        coords=frames[picked],
        theta_A=theta[picked],
        mode=np.zeros(n_templates, dtype=int),
        displacement_A=rmsd[picked],
    )
    return ensemble, picked
