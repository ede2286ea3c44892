"""Candidates on a micrograph's maps: the score, its local maxima, their micrograph coordinates, matching.

No torch (the report env has none). Map pixel (row, col) is the
window centred at origin + (col, row) · map pixel in Å of the micrograph
frame; micrograph coordinates are 0-based pixel centres, as
``_rlnCoordinateX/Y``.
"""

from __future__ import annotations

import math
from pathlib import Path

import mrcfile
import numpy as np
import pandas as pd

from cryoflow.io.fileio import atomic_path
from cryoflow.io.star import write_star

SCORES = ("p_particle", "sharp_typical")  # p_particle needs a junk-aware model


def score_kind(requested: str, junk_aware: bool) -> str:
    """The score ``picking.score`` names; ``auto``: p_particle for junk-aware models, else sharp_typical."""
    if requested == "auto":
        return "p_particle" if junk_aware else "sharp_typical"
    if requested == "p_particle" and not junk_aware:
        raise ValueError("picking.score: p_particle needs a model trained with train.junk_fraction > 0")
    return requested


def window_score(maps: dict, kind: str, theta_range_A: np.ndarray, typical_p: float) -> np.ndarray:
    """The score candidates are picked on, in [0, 1], and 0 where the window's latent is atypical among the
    simulations' (k-NN p-value below ``typical_p``).

    ``p_particle``: the junk-aware model's probability that the window holds a centred particle (it peaks
    on the centre: particles further off than the shift prior were negatives in training);
    ``sharp_typical``: 1 − σ/σ_prior, how much the posterior narrowed from the uniform prior.
    """
    if kind == "p_particle":
        value = maps["p_particle"]
    else:
        widths = theta_range_A[:, 1] - theta_range_A[:, 0]
        sigma = maps["theta_std"] if maps["theta_std"].ndim == 2 else maps["theta_std"].mean(axis=-1)
        value = np.clip(1.0 - sigma / (widths.mean() / math.sqrt(12.0)), 0.0, 1.0)
    return np.where(maps["atypicality_p"] >= typical_p, value, 0.0).astype(np.float32)


def local_maxima(score: np.ndarray, min_distance_px: float, threshold: float, limit: int | None = None):
    """(row, col) of greedy non-maximum suppression: best first, none within ``min_distance_px`` of a better one."""
    order = np.argsort(score, axis=None)[::-1]
    picked: list[tuple[int, int]] = []
    taken = np.zeros(score.shape, bool)
    reach = int(math.ceil(min_distance_px))
    yy, xx = np.mgrid[-reach : reach + 1, -reach : reach + 1]
    disc = yy**2 + xx**2 <= min_distance_px**2
    for flat in order:
        r, c = divmod(int(flat), score.shape[1])
        if score[r, c] < threshold:
            break
        if taken[r, c]:
            continue
        picked.append((r, c))
        if limit and len(picked) >= limit:
            break
        r0, r1, c0, c1 = r - reach, r + reach + 1, c - reach, c + reach + 1
        sub = disc[
            max(0, -r0) : disc.shape[0] - max(0, r1 - score.shape[0]),
            max(0, -c0) : disc.shape[1] - max(0, c1 - score.shape[1]),
        ]
        taken[max(0, r0) : min(score.shape[0], r1), max(0, c0) : min(score.shape[1], c1)] |= sub
    return picked


def map_to_micrograph_px(row, col, result: dict, micrograph_pixel_A: float) -> tuple[float, float]:
    """(x, y) in the original micrograph's pixels of a map pixel (0-based, pixel centres)."""
    x_A = result["origin_A"][0] + col * result["map_pixel_A"]
    y_A = result["origin_A"][1] + row * result["map_pixel_A"]
    return x_A / micrograph_pixel_A, y_A / micrograph_pixel_A


def nearest_map_pixel(x_px, y_px, result: dict, micrograph_pixel_A: float, shape) -> tuple[np.ndarray, np.ndarray]:
    """The map pixel (rows, cols) whose window centre is nearest to micrograph positions (x, y) in pixels."""
    col = np.rint((np.asarray(x_px) * micrograph_pixel_A - result["origin_A"][0]) / result["map_pixel_A"])
    row = np.rint((np.asarray(y_px) * micrograph_pixel_A - result["origin_A"][1]) / result["map_pixel_A"])
    return np.clip(row, 0, shape[0] - 1).astype(int), np.clip(col, 0, shape[1] - 1).astype(int)


def match_pairs(candidates: np.ndarray, truth: np.ndarray, radius: float) -> list[tuple[int, int]]:
    """Greedy one-to-one matching of candidate and true positions (n, 2) within ``radius``, closest pairs first:
    the (candidate, truth) index pairs."""
    if len(candidates) == 0 or len(truth) == 0:
        return []
    d = np.sqrt(((candidates[:, None, :] - truth[None, :, :]) ** 2).sum(-1))
    pairs = np.argwhere(d <= radius)
    pairs = pairs[np.argsort(d[pairs[:, 0], pairs[:, 1]], kind="stable")]
    used_c, used_t, out = set(), set(), []
    for c, t in pairs:
        if c not in used_c and t not in used_t:
            used_c.add(int(c))
            used_t.add(int(t))
            out.append((int(c), int(t)))
    return out


def match(candidates: np.ndarray, truth: np.ndarray, radius: float) -> tuple[int, int, int]:
    """(true positives, false positives, false negatives) of ``match_pairs``."""
    tp = len(match_pairs(candidates, truth, radius))
    return tp, len(candidates) - tp, len(truth) - tp


# --------------------------------------------------------------- file formats
# candidate columns: RELION's coordinate and figure-of-merit names, then cryoflow's (unit in the name)
MAP_COLUMNS = {
    "theta_mean": "cryoflowThetaMeanAngst",
    "theta_std": "cryoflowThetaStdAngst",
    "edge_mass": "cryoflowThetaEdgeMass",
    "atypicality_p": "cryoflowLatentAtypicalityP",
    "p_particle": "cryoflowParticleProbability",
}


def map_columns(key: str, value) -> dict[str, float]:
    """The candidate column(s) of one map value: one per θ coordinate for a 2-D θ."""
    column = MAP_COLUMNS[key]
    value = np.atleast_1d(value)
    if len(value) == 1:
        return {column: float(value[0])}
    return {column.replace("cryoflowTheta", f"cryoflowTheta{d + 1}", 1): float(v) for d, v in enumerate(value)}


def candidate_rows(micrograph: str, cells, result: dict, micrograph_pixel_A: float) -> list[dict]:
    """One row per candidate map pixel: micrograph name, coordinates in its pixels, score, posterior columns."""
    rows = []
    for r, c in cells:
        x, y = map_to_micrograph_px(r, c, result, micrograph_pixel_A)
        row = {
            "rlnMicrographName": micrograph,
            "rlnCoordinateX": round(x, 2),
            "rlnCoordinateY": round(y, 2),
            "rlnAutopickFigureOfMerit": float(result["maps"]["score"][r, c]),
        }
        for key in MAP_COLUMNS:
            if key in result["maps"]:
                row.update(map_columns(key, result["maps"][key][r, c]))
        rows.append(row)
    return rows


def write_score_map(path, values: np.ndarray, result: dict) -> list:
    """A map (rows, cols) as a 2-D MRC image whose pixel is the stride and origin the first window's centre
    (Å, micrograph frame); a map with a θ axis (rows, cols, 2) as one file per coordinate. Returns the paths."""
    path = Path(path)
    values = np.asarray(values, np.float32)
    planes = [values] if values.ndim == 2 else [values[..., d] for d in range(values.shape[-1])]
    written = []
    for d, plane in enumerate(planes):
        target = path if len(planes) == 1 else path.with_name(path.stem + f"{d + 1}" + path.suffix)
        with atomic_path(target) as tmp, mrcfile.new(tmp, overwrite=True) as mrc:
            mrc.set_data(np.ascontiguousarray(plane))
            mrc.voxel_size = result["map_pixel_A"]
            mrc.header.origin.x, mrc.header.origin.y = result["origin_A"]
        written.append(target)
    return written


def read_score_map(path) -> tuple[np.ndarray, float, tuple[float, float]]:
    """A map written by ``write_score_map``: values, pixel (Å) and origin (x, y) in Å."""
    with mrcfile.open(path, permissive=True) as mrc:
        return (
            np.asarray(mrc.data, np.float32),
            float(mrc.voxel_size.x),
            (float(mrc.header.origin.x), float(mrc.header.origin.y)),
        )


def write_coordinates(path, rows: list[dict]) -> None:
    """A RELION coordinate STAR file of one micrograph (``data_`` block, ``_rlnCoordinateX/Y`` …): what
    RELION's Extract job reads, listed in the set's coordinates.star."""
    columns = [c for c in (rows[0] if rows else {"rlnCoordinateX": 0, "rlnCoordinateY": 0}) if c != "rlnMicrographName"]
    write_star(path, {"": pd.DataFrame([{c: row[c] for c in columns} for row in rows], columns=columns)})


def write_candidate_table(path, rows: list[dict]) -> None:
    with atomic_path(path) as tmp:
        pd.DataFrame(rows).to_csv(tmp, sep="\t", index=False)


def read_candidate_tables(paths) -> pd.DataFrame:
    """The candidate tables of a set's shards, joined in order (an empty table when none has a candidate)."""
    tables = [pd.read_csv(path, sep="\t") for path in paths if Path(path).stat().st_size > 1]
    return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=["rlnMicrographName"])
