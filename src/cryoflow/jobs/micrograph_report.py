"""The micrograph_report rule: a micrograph set's candidates (STAR files RELION reads), ``summary.json`` and
the figure of its first micrograph."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from cryoflow.analysis import candidates
from cryoflow.io import micrographs
from cryoflow.io.fileio import read_json, write_json
from cryoflow.io.star import write_star
from cryoflow.job import Job
from cryoflow.report import micrograph_report

log = logging.getLogger("cryoflow.micrograph_report")


def picking_summary(card: dict, shards: list[dict], stats: list[dict], table: pd.DataFrame) -> dict:
    """Counts, the score and threshold, and the picking speed over every shard."""
    seconds = sum(m["seconds"] for m in stats)
    windows = sum(m["n_windows"] for m in stats)
    summary = {
        "model": {"name": card["name"]},
        "n_micrographs": len(stats),
        "n_windows": windows,
        "n_candidates": int(len(table)),
        "score": shards[0]["score"],
        "threshold": shards[0]["threshold"],
        "min_distance_A": shards[0]["min_distance_A"],
        "stride_A": stats[0]["map_pixel_A"],
        "windows_per_s": round(windows / max(seconds, 1e-9), 1),
        "seconds_per_micrograph": round(seconds / len(stats), 2),
        "seconds_per_megapixel": round(seconds / (sum(np.prod(m["shape_px"]) for m in stats) / 1e6), 3),
        "device": sorted({shard["device"] for shard in shards}),
    }
    if "cryoflowThetaMeanAngst" in table and len(table):
        summary["candidate_theta_mean_A"] = round(float(table["cryoflowThetaMeanAngst"].mean()), 3)
        summary["candidate_theta_std_median_A"] = round(float(table["cryoflowThetaStdAngst"].median()), 3)
    return summary


def first_micrograph_figure(first: dict, folder: Path, table: pd.DataFrame, contrast: str, truth_xy, figure) -> None:
    """The first micrograph with its score maps, picks, example windows and (in a demo) the true particles."""
    maps, geometry = micrograph_report.load_maps(folder, first["stem"], list(candidates.MAP_COLUMNS) + ["score"])
    image = micrographs.read(Path(first["path"]))
    image = -image if contrast == "dark" else image
    picked = table[table["rlnMicrographName"] == first["micrograph"]] if len(table) else table
    picked_xy = picked[["rlnCoordinateX", "rlnCoordinateY"]].to_numpy(float) if len(picked) else np.zeros((0, 2))
    examples_path = folder / "examples.npz"
    examples = dict(np.load(examples_path)) if examples_path.is_file() else None
    title = Path(first["micrograph"]).name
    micrograph_report.plot_micrograph(
        image, first["pixel_size_A"], maps, geometry, picked_xy, examples, figure, truth_xy, title=title
    )


def run(job: Job) -> None:
    job.start_log()
    ms = job.params.mset
    card = read_json(job.input.card)
    shards = [read_json(path) for path in job.input.stats]
    stats = [m for shard in shards for m in shard["micrographs"]]
    maps_dirs = {m["stem"]: Path(folder) for shard, folder in zip(shards, job.input.maps) for m in shard["micrographs"]}
    table = candidates.read_candidate_tables(job.input.tables)
    write_star(job.output.candidates, {"particles": table})
    listing = pd.DataFrame(
        {
            "rlnMicrographName": [m["micrograph"] for m in stats],
            "rlnMicrographCoordinates": [str(maps_dirs[m["stem"]] / f"{m['stem']}_pick.star") for m in stats],
        }
    )
    write_star(job.output.coordinates, {"coordinate_files": listing})
    summary = picking_summary(card, shards, stats, table)
    first, truth_xy = stats[0], None
    if job.input.truth:
        truth = pd.read_csv(job.input.truth[0], sep="\t")
        theta_range = card["architecture"]["theta_range_A"]
        matching = (summary["score"], ms["picking"], summary["min_distance_A"], ms["match_radius_A"], theta_range)
        summary["truth"] = micrograph_report.truth_comparison(stats, maps_dirs, truth, *matching)
        on_first = truth[(truth["micrograph"] == first["micrograph"]) & (truth["kind"] == "particle")]
        truth_xy = on_first[["x_px", "y_px"]].to_numpy(float)
        log.info("against the truth: %s", json.dumps(summary["truth"]))
    write_json(job.output.summary, summary)
    first_micrograph_figure(first, maps_dirs[first["stem"]], table, ms["contrast"], truth_xy, job.output.figure)
    log.info(
        "%d micrographs, %d windows (%.0f windows/s), %d candidates",
        len(stats),
        summary["n_windows"],
        summary["windows_per_s"],
        len(table),
    )
