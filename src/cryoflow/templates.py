"""Conformational ensembles ordered along a 1-D coordinate θ (in Å).

θ = γ·RMSD(template, reference) after optimal superposition, with γ = -1 on
the side of the first chosen normal mode and γ = +1 on the side of the
second; the reference sits at θ = 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import prody

from cryoflow.fileio import InputError


def kabsch_rmsd(mobile: np.ndarray, target: np.ndarray, weights: np.ndarray | None = None) -> float:
    """RMSD in Å between two (N, 3) coordinate sets after optimal superposition."""
    mobile = np.asarray(mobile, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    w = np.ones(len(mobile)) if weights is None else np.asarray(weights, dtype=np.float64)
    w = w / w.sum()
    a = mobile - w @ mobile
    b = target - w @ target
    h = (a * w[:, None]).T @ b
    u, _, vt = np.linalg.svd(h)
    d = np.sign(np.linalg.det(vt.T @ u.T))
    rotation = vt.T @ np.diag([1.0, 1.0, d]) @ u.T
    diff = a @ rotation.T - b
    return float(np.sqrt(w @ np.sum(diff**2, axis=1)))


def anm_modes(ca_coords: np.ndarray, n_modes: int, cutoff_A: float, spring_constant: float) -> np.ndarray:
    """Lowest ``n_modes`` non-trivial ANM modes as unit vectors of shape (n_modes, N, 3).

    The sign of each mode is fixed so that its largest component is positive,
    which makes the ensemble reproducible across LAPACK builds.
    """
    anm = prody.ANM("reference")
    anm.buildHessian(np.asarray(ca_coords, dtype=np.float64), cutoff=cutoff_A, gamma=spring_constant)
    anm.calcModes(n_modes=n_modes, zeros=False)
    vectors = anm.getEigvecs().T.reshape(n_modes, -1, 3)
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
    """Templates (T, N, 3) in Å, ordered by θ, with their provenance."""

    coords: np.ndarray
    theta_A: np.ndarray
    mode: np.ndarray  # 1-based mode index per template, 0 for the reference
    displacement_A: np.ndarray  # RMSD of the applied displacement before superposition

    def table_rows(self) -> list[dict]:
        return [
            {
                "template": i,
                "mode": int(self.mode[i]),
                "displacement_A": round(float(self.displacement_A[i]), 4),
                "theta_A": round(float(self.theta_A[i]), 4),
            }
            for i in range(len(self.theta_A))
        ]


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
    The ANM is built on CA atoms; other atoms follow their residue's CA.
    """
    if len(modes) != 2 or min(modes) < 1:
        raise InputError(f"templates.nma.modes must be two 1-based mode numbers, got {list(modes)}")
    ref = atoms.getCoords().astype(np.float64)
    is_ca = atoms.getNames() == "CA"
    if is_ca.sum() < 3:
        raise InputError("structure: fewer than 3 CA atoms, cannot build a normal-mode model")
    ca_vectors = anm_modes(ref[is_ca], max(modes), cutoff_A, spring_constant)
    if is_ca.all():
        vectors = ca_vectors
    else:
        residue_keys = list(zip(atoms.getChids(), atoms.getResnums(), atoms.getIcodes()))
        ca_index = {key: i for i, key in enumerate(k for k, ca in zip(residue_keys, is_ca) if ca)}
        missing = [key for key in residue_keys if key not in ca_index]
        if missing:
            raise InputError(f"structure: residue {missing[0]} has no CA atom; select beads: CA")
        vectors = extend_to_atoms(ca_vectors, np.array([ca_index[k] for k in residue_keys]))
    amplitudes, sides = template_amplitudes(n_templates, max_rmsd_A)
    n_atoms = len(ref)
    coords, theta, mode_of = [], [], []
    for amplitude, side in zip(amplitudes, sides):
        mode = 0 if side == 0 else (modes[0] if side < 0 else modes[1])
        xyz = ref if side == 0 else ref + amplitude * np.sqrt(n_atoms) * vectors[mode - 1]
        coords.append(xyz)
        theta.append(side * kabsch_rmsd(xyz, ref))
        mode_of.append(mode)
    return Ensemble(
        coords=np.stack(coords),
        theta_A=np.asarray(theta),
        mode=np.asarray(mode_of, dtype=int),
        displacement_A=amplitudes,
    )
