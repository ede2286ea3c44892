"""Rule micrograph_report: a micrograph set's candidates (STAR files RELION reads), summary.json and figure."""

import json
from pathlib import Path

import numpy as np
import pandas as pd

from cryoflow.analysis import candidates
from cryoflow.io import micrographs
from cryoflow.io.fileio import write_json
from cryoflow.io.star import write_star
from cryoflow.logs import configure
from cryoflow.report import micrograph_report

log = configure(snakemake.log[0])
ms = snakemake.params.mset
cfg = ms["picking"]
card = json.loads(Path(snakemake.input.card).read_text())
theta_range = card["architecture"]["theta_range_A"]
shards = [json.loads(Path(path).read_text()) for path in snakemake.input.stats]
stats = [m for shard in shards for m in shard["micrographs"]]
maps_dirs = {
    m["stem"]: Path(folder) for shard, folder in zip(shards, snakemake.input.maps) for m in shard["micrographs"]
}
table = candidates.read_candidate_tables(snakemake.input.tables)
write_star(snakemake.output.candidates, {"particles": table})
listing = pd.DataFrame(
    {
        "rlnMicrographName": [m["micrograph"] for m in stats],
        "rlnMicrographCoordinates": [str(maps_dirs[m["stem"]] / f"{m['stem']}_pick.star") for m in stats],
    }
)
write_star(snakemake.output.coordinates, {"coordinate_files": listing})

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
truth_xy = None
first = stats[0]
if snakemake.input.truth:
    truth = pd.read_csv(snakemake.input.truth[0], sep="\t")
    summary["truth"] = micrograph_report.truth_comparison(
        stats, maps_dirs, truth, summary["score"], cfg, summary["min_distance_A"], ms["match_radius_A"], theta_range
    )
    on_first = truth[(truth["micrograph"] == first["micrograph"]) & (truth["kind"] == "particle")]
    truth_xy = on_first[["x_px", "y_px"]].to_numpy(float)
    log.info("against the truth: %s", json.dumps(summary["truth"]))
write_json(snakemake.output.summary, summary)

maps, geometry = micrograph_report.load_maps(
    maps_dirs[first["stem"]], first["stem"], list(candidates.MAP_COLUMNS) + ["score"]
)
image = micrographs.read(Path(first["path"]))
image = -image if ms["contrast"] == "dark" else image
picked = table[table["rlnMicrographName"] == first["micrograph"]] if len(table) else table
picked_xy = picked[["rlnCoordinateX", "rlnCoordinateY"]].to_numpy(float) if len(picked) else np.zeros((0, 2))
examples_path = maps_dirs[first["stem"]] / "examples.npz"
examples = dict(np.load(examples_path)) if examples_path.is_file() else None
micrograph_report.plot_micrograph(
    image,
    first["pixel_size_A"],
    maps,
    geometry,
    picked_xy,
    examples,
    snakemake.output.figure,
    truth_xy,
    title=Path(first["micrograph"]).name,
)
log.info(
    "%d micrographs, %d windows (%.0f windows/s), %d candidates",
    len(stats),
    windows,
    summary["windows_per_s"],
    len(table),
)
