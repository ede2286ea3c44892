"""Image grids that cannot be right, refused before any job runs (standard library only, for the DAG side).

The structure's size is read from a local PDB or mmCIF file's CA atoms (a PDB
id is fetched by the structure job; its size is not known before). Each check
returns messages that name the key, its value and a value that would fit.
"""

from __future__ import annotations

import math

from cryoflow.physics.boxsize import MAX_RESAMPLED_PX, resampled_box_px


def resampling_problems(key: str, box_in: int, pixel_sizes_A, pixel_out_A: float, where: str) -> list[str]:
    """A particle box whose resampling to the training pixel size would need more than ``MAX_RESAMPLED_PX``
    pixels a side: the particles' pixel size (``key``) or the training's is off by orders of magnitude."""
    problems = []
    for pixel in pixel_sizes_A:
        need = resampled_box_px(box_in, pixel, pixel_out_A)
        if need > MAX_RESAMPLED_PX:
            problems.append(
                f"{key}: particles of {pixel:g} Å pixels in {box_in} px boxes ({where}) resampled to the training "
                f"pixel size image.pixel_size_A = {pixel_out_A:g} Å need {need} × {need} pixels per image (over "
                f"{MAX_RESAMPLED_PX}): check both pixel sizes; at most "
                f"{MAX_RESAMPLED_PX * pixel_out_A / box_in:.4g} Å fits"
            )
    return problems


def span_A(positions) -> float:
    """A lower bound of the largest distance between two CA atoms (two farthest-point sweeps, exact for most
    shapes): a box narrower than this cannot hold every view of the structure."""
    first = positions[0]
    a = max(positions, key=lambda p: math.dist(p, first))
    b = max(positions, key=lambda p: math.dist(p, a))
    return math.dist(a, b)


def grid_problems(cfg: dict, positions, where: str) -> list[str]:
    """The image grid, the masks and the normal modes against the structure (its selected CA ``positions``;
    None where unknown) and the box; ``where`` names the structure in messages."""
    span = span_A(positions) if positions and len(positions) > 1 else None
    image, sim = cfg["image"], cfg["simulator"]
    box_A = image["box_px"] * image["pixel_size_A"]
    problems = []
    if span is not None and box_A < span:
        need = math.ceil(span / image["pixel_size_A"] / 2) * 2
        problems.append(
            f"image.box_px: {image['box_px']} px × {image['pixel_size_A']:g} Å = {box_A:g} Å is smaller than the "
            f"structure ({where}: its CA atoms span at least {span:.0f} Å); use box_px ≥ {need}, or a larger "
            "pixel_size_A"
        )
    vol = cfg["volumes"]
    vol_A = vol["box_vox"] * vol["voxel_size_A"]
    if span is not None and vol_A < span:
        need = math.ceil(span / vol["voxel_size_A"] / 2) * 2
        problems.append(
            f"volumes.box_vox: {vol['box_vox']} voxels × {vol['voxel_size_A']:g} Å = {vol_A:g} Å is smaller than the "
            f"structure ({where}: its CA atoms span at least {span:.0f} Å); use box_vox ≥ {need}"
        )
    for key, radius in (
        ("simulator.mask_radius_A", sim["mask_radius_A"]),
        ("particles.mask_radius_A", cfg["particles"]["mask_radius_A"]),
    ):
        if radius is not None and radius >= box_A / 2:
            problems.append(
                f"{key}: {radius:g} Å reaches the edge of the {box_A:g} Å training box; use less than {box_A / 2:g}"
            )
    nma = cfg["templates"]["nma"]
    internal = 3 * len(positions) - 6 if positions else None  # ANM on CA: 3N less rigid-body motions
    if internal is not None and cfg["templates"]["method"] == "nma" and max(nma["modes"]) > internal:
        problems.append(
            f"templates.nma.modes: mode {max(nma['modes'])} asked for, but {where}'s {len(positions)} CA atoms have "
            f"{max(internal, 0)} internal normal modes; choose modes 1 to {max(internal, 0)}"
        )
    if span is not None and cfg["templates"]["method"] == "nma" and nma["max_rmsd_A"] > span / 2:
        problems.append(
            f"templates.nma.max_rmsd_A: {nma['max_rmsd_A']:g} Å is more than half the structure's size ({where}: "
            f"{span:.0f} Å): normal modes that far apart tear it; use at most {span / 2:.0f}"
        )
    return problems
