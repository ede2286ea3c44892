"""Rule pick: one shard of a micrograph set, window by window: posterior maps, candidates, example windows."""

import json
import shutil
from pathlib import Path

import numpy as np
import torch

from cryoflow.analysis import candidates, picking, predictive
from cryoflow.io import micrographs, starindex
from cryoflow.io.fileio import atomic_path, write_json
from cryoflow.logs import configure
from cryoflow.sbi import models, training

log = configure(snakemake.log[0])
ms = snakemake.params.mset
cfg = ms["picking"]
image = snakemake.params.image
box, train_pixel = image["box_px"], image["pixel_size_A"]
shard = int(snakemake.wildcards.shard)
torch.set_num_threads(snakemake.threads)
device = training.select_device(cfg["device"])
star = snakemake.input.star[0] if snakemake.input.star else None
every, source = micrographs.open_set(ms, star, snakemake.params.optics)
rows = starindex.shard_rows(len(every), ms["shards"])[shard]
mine = [(i, every[i]) for i in rows]
headers = micrographs.check([m for _, m in mine], box * train_pixel, source)  # every file, before any output
model, _ = models.load_model(snakemake.input.model, device)
card = json.loads(Path(snakemake.input.card).read_text())
low, high = card["priors"]["defocus_range_A"]
reference = np.load(snakemake.input.reference)["latent"]
reference = predictive.LatentReference(reference, cfg["neighbours"])
kind = candidates.score_kind(cfg["score"], model.particle is not None)
min_distance_A = cfg["min_distance_A"] or snakemake.params.mask_radius_A or 0.4 * box * train_pixel
log.info(
    "shard %d: %d of %d micrographs; score %s ≥ %.3g, candidates ≥ %.0f Å apart",
    shard,
    len(mine),
    len(every),
    kind,
    cfg["threshold"],
    min_distance_A,
)

maps_dir = Path(snakemake.output.maps)
tmp_dir = maps_dir.with_name(maps_dir.name + ".tmp")
shutil.rmtree(tmp_dir, ignore_errors=True)
tmp_dir.mkdir(parents=True)
table, stats = [], []
try:
    for number, ((index, m), header) in enumerate(zip(mine, headers)):
        ctf = picking.micrograph_ctf(m)
        models.check_ctf_in_prior(model, {k: np.array([v]) for k, v in ctf.items()}, str(m.path))
        if not low <= m.defocus_A <= high:
            log.warning("%s: defocus %.0f Å is outside the model's prior (%.0f–%.0f Å)", m.path, m.defocus_A, low, high)
        data = micrographs.read(m.path, header)
        if ms["contrast"] == "dark":
            data = -data
        result = picking.evaluate_micrograph(
            model,
            data,
            m.pixel_size_A,
            train_pixel,
            box,
            cfg["stride_px"],
            reference,
            cfg,
            device=device,
            whiten=cfg["whiten"],
            seed=snakemake.params.seed + index,
            label=Path(m.name).name,
            ctf=ctf,
        )
        stem = f"{index:05d}_{Path(m.name).stem}"
        for key, values in result["maps"].items():
            candidates.write_score_map(tmp_dir / f"{stem}_{key}.mrc", values, result)
        cells = candidates.local_maxima(
            result["maps"]["score"], min_distance_A / result["map_pixel_A"], cfg["threshold"], cfg["max_candidates"]
        )
        picked = candidates.candidate_rows(m.name, cells, result, m.pixel_size_A)
        candidates.write_coordinates(tmp_dir / f"{stem}_pick.star", picked)
        table += picked
        if number == 0:  # example windows of the shard's first micrograph, for the report's figure
            examples = picking.example_windows(
                model, result, cells[: cfg["figure_windows"]], box, cfg["stride_px"], cfg["grid_points"], device, ctf
            )
            with atomic_path(tmp_dir / "examples.npz") as tmp, open(tmp, "wb") as handle:
                np.savez(handle, **examples)
        stats.append(
            {
                "index": index,
                "micrograph": m.name,
                "path": str(m.path),
                "stem": stem,
                "shape_px": list(header.shape),
                "pixel_size_A": m.pixel_size_A,
                "defocus_A": m.defocus_A,
                "resampled_pixel_A": result["pixel_size_A"],
                "map_pixel_A": result["map_pixel_A"],
                "origin_A": list(result["origin_A"]),
                "n_windows": result["n_windows"],
                "n_candidates": len(cells),
                "seconds": round(result["seconds"], 3),
            }
        )
        log.info(
            "%s: %d windows in %.1f s (%.0f windows/s), %d candidates",
            m.name,
            result["n_windows"],
            result["seconds"],
            result["n_windows"] / result["seconds"],
            len(cells),
        )
    candidates.write_candidate_table(snakemake.output.table, table)
    write_json(
        snakemake.output.stats,
        {
            "score": kind,
            "threshold": cfg["threshold"],
            "min_distance_A": min_distance_A,
            "device": str(device),
            "micrographs": stats,
        },
    )
    shutil.rmtree(maps_dir, ignore_errors=True)
    tmp_dir.rename(maps_dir)
except BaseException:
    shutil.rmtree(tmp_dir, ignore_errors=True)
    raise
