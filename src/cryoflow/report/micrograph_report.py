"""A micrograph set's report: candidates against a known truth (demo sets) and the Fig. 5-like figure.

Against the truth of a synthetic set (``truth.tsv``): for every true
particle, the window whose centre is nearest to it (at most half a stride
off along each axis) gives the posterior mean that is correlated with the
true θ; candidates are matched one to one with true particles within
``match_radius_A`` for precision and recall, for the set's score and for
each other score the maps allow.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from cryoflow.analysis import candidates
from cryoflow.report.figures import _save, plt


def load_maps(maps_dir, stem: str, keys) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The maps of one micrograph (those present of ``keys``) and the geometry ``candidates`` works with."""
    maps: dict[str, np.ndarray] = {}
    geometry: dict[str, Any] = {}
    for key in keys:
        path = maps_dir / f"{stem}_{key}.mrc"
        if path.is_file():
            maps[key], pixel, origin = candidates.read_score_map(path)
            geometry = {"map_pixel_A": pixel, "origin_A": origin}
        elif (maps_dir / f"{stem}_{key}1.mrc").is_file():  # a 2-D θ: one map per coordinate
            planes = [candidates.read_score_map(maps_dir / f"{stem}_{key}{d}.mrc")[0] for d in (1, 2)]
            maps[key] = np.stack(planes, axis=-1)
    return maps, geometry


def first_coordinate(maps: dict, key: str) -> np.ndarray:
    """A map of θ, or of θ₁ for a 2-D θ (maps (rows, cols, 2)): truth.tsv holds θ₁."""
    return maps[key][..., 0] if maps[key].ndim == 3 else maps[key]


def rates(tp: int, fp: int, fn: int) -> dict:
    """Precision, recall and F1 of a candidate list from its matching counts."""
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "precision": round(precision, 4),
        "recall": round(recall, 4),
        "f1": round(f1, 4),
        "true_positives": tp,
        "false_positives": fp,
        "false_negatives": fn,
    }


FOUND_KEYS = (
    "theta_true",
    "theta_mean",
    "theta_std",
    "offset_A",
    "p_particle_particles",
    "p_particle_junk",
    "picked_mean",
    "picked_true",
)


def windows_at_truth(found: dict, maps: dict, geometry: dict, rows: pd.DataFrame, pixel_A: float) -> None:
    """Append to ``found`` what the maps say at each true particle's nearest window (and p(particle) at junk)."""
    particles, junk = rows[rows["kind"] == "particle"], rows[rows["kind"] == "junk"]
    r, c = candidates.nearest_map_pixel(
        particles["x_px"], particles["y_px"], geometry, pixel_A, maps["theta_mean"].shape
    )
    centre_x, centre_y = candidates.map_to_micrograph_px(r, c, geometry, pixel_A)
    found["offset_A"].append(np.hypot(centre_x - particles["x_px"], centre_y - particles["y_px"]) * pixel_A)
    found["theta_true"].append(particles["theta_A"].to_numpy(float))
    found["theta_mean"].append(first_coordinate(maps, "theta_mean")[r, c])
    found["theta_std"].append(first_coordinate(maps, "theta_std")[r, c])
    if "p_particle" in maps:
        found["p_particle_particles"].append(maps["p_particle"][r, c])
        jr, jc = candidates.nearest_map_pixel(junk["x_px"], junk["y_px"], geometry, pixel_A, maps["p_particle"].shape)
        found["p_particle_junk"].append(maps["p_particle"][jr, jc])


def score_candidates(maps: dict, geometry: dict, kind: str, settings: tuple, pixel_A: float):
    """The candidates (map cells, micrograph xy in px) a score ``kind`` picks with the job's settings
    (picking section, min distance in Å, θ range)."""
    picking, min_distance_A, theta_range_A = settings
    values = candidates.window_score(maps, kind, np.asarray(theta_range_A, float).reshape(-1, 2), picking["typical_p"])
    cells = candidates.local_maxima(
        values, min_distance_A / geometry["map_pixel_A"], picking["threshold"], picking["max_candidates"]
    )
    xy = np.array([candidates.map_to_micrograph_px(a, b, geometry, pixel_A) for a, b in cells]).reshape(-1, 2)
    return cells, xy


def rounded(value: float, digits: int) -> float:
    return round(float(value), digits)


def truth_numbers(joined: dict, truth: pd.DataFrame, score: str, match_radius_A: float) -> dict:
    """The truth comparison's summary from the joined per-particle values."""
    error = np.abs(joined["theta_mean"] - joined["theta_true"])
    picked_r = (
        np.corrcoef(joined["picked_mean"], joined["picked_true"])[0, 1] if len(joined["picked_mean"]) > 2 else None
    )
    out = {
        "n_true_particles": int(len(joined["theta_true"])),
        "n_true_junk": int((truth["kind"] == "junk").sum()),
        "window_offset_max_A": rounded(joined["offset_A"].max(), 2) if len(joined["offset_A"]) else None,
        "pearson_r_on_particles": rounded(np.corrcoef(joined["theta_mean"], joined["theta_true"])[0, 1], 4),
        "median_abs_error_on_particles_A": rounded(np.median(error), 3),
        "median_std_on_particles_A": rounded(np.median(joined["theta_std"]), 3),
        "pearson_r_on_picked": None if picked_r is None else rounded(picked_r, 4),
        "score": score,
        "match_radius_A": match_radius_A,
    }
    if len(joined["p_particle_particles"]):
        out["median_p_particle_on_particles"] = rounded(np.median(joined["p_particle_particles"]), 4)
        if len(joined["p_particle_junk"]):
            out["median_p_particle_on_junk"] = rounded(np.median(joined["p_particle_junk"]), 4)
    return out


def truth_comparison(
    micrograph_stats: list[dict],
    maps_dirs: dict,
    truth: pd.DataFrame,
    score: str,
    picking: dict,
    min_distance_A: float,
    match_radius_A: float,
    theta_range_A,
) -> dict[str, Any]:
    """Correlation of window posterior means with the true θ, and precision/recall of each score's candidates."""
    found: dict[str, list] = {key: [] for key in FOUND_KEYS}
    per_score: dict[str, list] = {kind: [] for kind in candidates.SCORES}
    settings = (picking, min_distance_A, theta_range_A)
    for stats in micrograph_stats:
        maps, geometry = load_maps(maps_dirs[stats["stem"]], stats["stem"], list(candidates.MAP_COLUMNS) + ["score"])
        rows = truth[truth["micrograph"] == stats["micrograph"]]
        pixel, radius_px = stats["pixel_size_A"], match_radius_A / stats["pixel_size_A"]
        windows_at_truth(found, maps, geometry, rows, pixel)
        particles = rows[rows["kind"] == "particle"]
        true_xy = particles[["x_px", "y_px"]].to_numpy(float)
        for kind in per_score:
            if kind == "p_particle" and "p_particle" not in maps:
                continue
            cells, xy = score_candidates(maps, geometry, kind, settings, pixel)
            per_score[kind].append((xy, true_xy, radius_px))
            if kind == score:  # the posterior mean where each picked true particle was picked
                for c, t in candidates.match_pairs(xy, true_xy, radius_px):
                    found["picked_mean"].append(np.atleast_1d(first_coordinate(maps, "theta_mean")[cells[c]]))
                    found["picked_true"].append(np.atleast_1d(particles["theta_A"].to_numpy(float)[t]))
    joined = {k: np.concatenate(v) if v else np.zeros(0) for k, v in found.items()}
    out = truth_numbers(joined, truth, score, match_radius_A)
    for kind, parts in per_score.items():
        if parts:
            counts = np.sum([candidates.match(xy, true_xy, radius) for xy, true_xy, radius in parts], axis=0)
            out[f"picking_{kind}"] = rates(*(int(n) for n in counts))
    return out


def display_image(image: np.ndarray, max_side: int = 768) -> tuple[np.ndarray, int]:
    """A micrograph binned for display (at most ``max_side`` pixels a side) and clipped to ±3σ."""
    factor = max(1, int(np.ceil(max(image.shape) / max_side)))
    ny, nx = (n // factor * factor for n in image.shape)
    binned = image[:ny, :nx].reshape(ny // factor, factor, nx // factor, factor).mean(axis=(1, 3))
    mean, sd = binned.mean(), binned.std() or 1.0
    return np.clip((binned - mean) / sd, -3, 3), factor


def micrograph_panel(ax, image: np.ndarray, pixel_A: float, picked_xy: np.ndarray, truth_xy, title: str) -> None:
    """The micrograph (binned, ±3σ) with its candidates and, in a demo, the true particles."""
    extent_A = (0, image.shape[1] * pixel_A, image.shape[0] * pixel_A, 0)
    ax.imshow(display_image(image)[0], cmap="gray", extent=extent_A)
    if truth_xy is not None and len(truth_xy):
        x, y = truth_xy[:, 0] * pixel_A, truth_xy[:, 1] * pixel_A
        ax.scatter(x, y, s=60, facecolors="none", edgecolors="C2", linewidths=0.8, label="true particle")
    if len(picked_xy):
        ax.scatter(picked_xy[:, 0] * pixel_A, picked_xy[:, 1] * pixel_A, s=12, c="C3", marker="x", label="candidate")
    ax.set_title(title or "micrograph")
    ax.set_xlabel("x (Å)")
    if len(picked_xy) or truth_xy is not None:
        ax.legend(loc="lower right", fontsize=7)


def map_panels(fig, rows: int, maps: dict, geometry: dict, extent_A: tuple) -> None:
    """|θ mean − reference|, posterior σ and the score, on the micrograph's axes."""
    rows_m, cols_m = maps["theta_mean"].shape[:2]
    x0, y0 = geometry["origin_A"]
    step = geometry["map_pixel_A"]
    map_extent = (x0 - step / 2, x0 + (cols_m - 0.5) * step, y0 + (rows_m - 0.5) * step, y0 - step / 2)
    mean = maps["theta_mean"] if maps["theta_mean"].ndim == 2 else np.linalg.norm(maps["theta_mean"], axis=-1)
    sigma = maps["theta_std"] if maps["theta_std"].ndim == 2 else maps["theta_std"].mean(axis=-1)
    panels = [
        (np.abs(mean), "|posterior mean θ − reference| (Å)", "viridis"),
        (sigma, "posterior σ (Å)", "magma"),
        (maps["score"], "score", "cividis"),
    ]
    for k, (values, label, cmap) in enumerate(panels, start=2):
        ax = fig.add_subplot(rows, 4, k)
        im = ax.imshow(values, cmap=cmap, extent=map_extent)
        ax.set_xlim(extent_A[0], extent_A[1])
        ax.set_ylim(extent_A[2], extent_A[3])
        ax.set_title(label)
        fig.colorbar(im, ax=ax, shrink=0.7)


def example_panels(fig, rows: int, examples: dict) -> None:
    """Up to four example windows, each beside its posterior over θ."""
    for k in range(min(len(examples["images"]), 4)):
        ax = fig.add_subplot(rows, 8, 9 + 2 * k)
        ax.imshow(examples["images"][k], cmap="gray")
        ax.set_axis_off()
        ax.set_title(f"window {k + 1}", fontsize=8)
        if "mass" in examples:
            ax = fig.add_subplot(rows, 8, 10 + 2 * k)
            grid = examples["theta_grid_A"]
            ax.plot(grid, examples["mass"][k] / (grid[1] - grid[0]), color="C0")
            ax.set_xlabel("θ (Å)", fontsize=8)
            ax.set_yticks([])
            ax.set_title("posterior", fontsize=8)


def plot_micrograph(
    image: np.ndarray,
    pixel_A: float,
    maps: dict,
    geometry: dict,
    picked_xy: np.ndarray,
    examples: dict | None,
    path,
    truth_xy=None,
    title: str = "",
) -> None:
    """Fig. 5 of the paper, for one micrograph: the micrograph with its candidates, |θ mean − reference|,
    posterior σ, the score, and example windows with their posteriors."""
    n_examples = 0 if examples is None else len(examples["images"])
    fig = plt.figure(figsize=(16, 8.5 if n_examples else 4.6))
    rows = 2 if n_examples else 1
    micrograph_panel(fig.add_subplot(rows, 4, 1), image, pixel_A, picked_xy, truth_xy, title)
    map_panels(fig, rows, maps, geometry, (0, image.shape[1] * pixel_A, image.shape[0] * pixel_A, 0))
    if examples is not None:
        example_panels(fig, rows, examples)
    fig.tight_layout()
    _save(fig, path)
