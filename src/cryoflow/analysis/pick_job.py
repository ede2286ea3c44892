"""One pick job: a shard of a micrograph set, micrograph by micrograph: posterior maps as MRC images, the
candidates (a RELION coordinate STAR file per micrograph), the first micrograph's example windows, and the
shard's table and timings. Maps land in their folder only once the whole shard is done."""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cryoflow.analysis import candidates, picking
from cryoflow.analysis.predictive import LatentReference
from cryoflow.io import micrographs
from cryoflow.io.fileio import write_json, write_npz
from cryoflow.sbi import models
from cryoflow.sbi.models import PosteriorEstimator

log = logging.getLogger(__name__)


def min_distance_A(picking_cfg: dict, mask_radius_A: float | None, image: dict) -> float:
    """How far apart candidates must be: ``picking.min_distance_A``, else the simulator's mask radius, else
    40 % of the training box."""
    return picking_cfg["min_distance_A"] or mask_radius_A or 0.4 * image["box_px"] * image["pixel_size_A"]


def micrograph_stats(index: int, m, header, stem: str, result: dict, n_candidates: int) -> dict:
    return {
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
        "n_candidates": n_candidates,
        "seconds": round(result["seconds"], 3),
    }


@dataclass(frozen=True)
class Picker:
    """What each micrograph of a shard is picked with: the model, the set's settings, the training grid,
    the latent reference, the model's defocus prior and the candidates' distance."""

    model: PosteriorEstimator
    mset: dict
    image: dict
    reference: LatentReference
    defocus_range_A: tuple[float, float]
    distance_A: float
    seed: int
    device: str | torch.device

    def evaluate(self, index: int, m, header) -> tuple[dict, dict]:
        """The micrograph's posterior maps (``picking.evaluate_micrograph``) and its CTF."""
        cfg, (low, high) = self.mset["picking"], self.defocus_range_A
        ctf = picking.micrograph_ctf(m)
        models.check_ctf_in_prior(self.model, {k: np.array([v]) for k, v in ctf.items()}, str(m.path))
        if not low <= m.defocus_A <= high:
            log.warning("%s: defocus %.0f Å is outside the model's prior (%.0f–%.0f Å)", m.path, m.defocus_A, low, high)
        data = micrographs.read(m.path, header)
        if self.mset["contrast"] == "dark":
            data = -data
        result = picking.evaluate_micrograph(
            self.model,
            data,
            m.pixel_size_A,
            self.image["pixel_size_A"],
            self.image["box_px"],
            cfg["stride_px"],
            self.reference,
            cfg,
            device=self.device,
            whiten=cfg["whiten"],
            seed=self.seed + index,
            label=Path(m.name).name,
            ctf=ctf,
        )
        return result, ctf

    def pick(self, index: int, m, header, folder: Path, with_examples: bool) -> tuple[list[dict], dict]:
        """Maps, coordinate STAR file (and example windows) of one micrograph in ``folder``; returns its
        candidate rows and its stats."""
        cfg = self.mset["picking"]
        result, ctf = self.evaluate(index, m, header)
        stem = f"{index:05d}_{Path(m.name).stem}"
        for key, values in result["maps"].items():
            candidates.write_score_map(folder / f"{stem}_{key}.mrc", values, result)
        cells = candidates.local_maxima(
            result["maps"]["score"], self.distance_A / result["map_pixel_A"], cfg["threshold"], cfg["max_candidates"]
        )
        picked = candidates.candidate_rows(m.name, cells, result, m.pixel_size_A)
        candidates.write_coordinates(folder / f"{stem}_pick.star", picked)
        if with_examples:  # example windows of the shard's first micrograph, for the report's figure
            shown = cells[: cfg["figure_windows"]]
            window = self.image["box_px"], cfg["stride_px"], cfg["grid_points"]
            write_npz(
                folder / "examples.npz", **picking.example_windows(self.model, result, shown, *window, self.device, ctf)
            )
        log.info(
            "%s: %d windows in %.1f s (%.0f windows/s), %d candidates",
            m.name,
            result["n_windows"],
            result["seconds"],
            result["n_windows"] / result["seconds"],
            len(cells),
        )
        return picked, micrograph_stats(index, m, header, stem, result, len(cells))


def pick_shard(
    model,
    mine,
    headers,
    mset: dict,
    image: dict,
    reference,
    defocus_range_A,
    outputs: dict,
    *,
    mask_radius_A=None,
    seed: int = 0,
    device="cpu",
) -> None:
    """Evaluate the micrographs ``mine`` ((index in the set, micrograph) pairs, with their checked ``headers``)
    and write ``outputs``: ``maps`` (a folder), ``table`` (candidates TSV) and ``stats`` (JSON)."""
    cfg = mset["picking"]
    kind = candidates.score_kind(cfg["score"], model.particle is not None)
    distance_A = min_distance_A(cfg, mask_radius_A, image)
    picker = Picker(model, mset, image, reference, tuple(defocus_range_A), distance_A, seed, device)
    log.info(
        "%d micrographs; score %s ≥ %.3g, candidates ≥ %.0f Å apart", len(mine), kind, cfg["threshold"], distance_A
    )
    maps_dir = Path(outputs["maps"])
    tmp_dir = maps_dir.with_name(maps_dir.name + ".tmp")
    shutil.rmtree(tmp_dir, ignore_errors=True)
    tmp_dir.mkdir(parents=True)
    table, stats = [], []
    try:
        for number, ((index, m), header) in enumerate(zip(mine, headers)):
            picked, micrograph = picker.pick(index, m, header, tmp_dir, with_examples=number == 0)
            table += picked
            stats.append(micrograph)
        candidates.write_candidate_table(outputs["table"], table)
        summary = {"score": kind, "threshold": cfg["threshold"], "min_distance_A": distance_A, "device": str(device)}
        write_json(outputs["stats"], {**summary, "micrographs": stats})
        shutil.rmtree(maps_dir, ignore_errors=True)
        tmp_dir.rename(maps_dir)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
