"""Image grids that cannot be right, refused before any job runs (standard library only, for the DAG side).

The structure's size is read from a local PDB or mmCIF file's CA atoms (a PDB
id is fetched by the structure job; its size is not known before). Each check
returns messages that name the key, its value and a value that would fit.
"""

from __future__ import annotations

import gzip
import math
import shlex
from pathlib import Path


def ca_positions(path: str | Path, chains=None) -> list[tuple[float, float, float]]:
    """CA atoms (ATOM records) of ``chains`` (author chain ids; None: all) of a PDB or mmCIF file."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt", errors="replace") as handle:
        lines = handle.read().splitlines()
    wanted = None if chains is None else {str(c) for c in chains}
    if any(line.startswith("_atom_site.") for line in lines):
        return _cif_ca(lines, wanted)
    found = []
    for line in lines:
        if line.startswith("ATOM") and line[12:16].strip() == "CA" and (wanted is None or line[21] in wanted):
            try:
                found.append((float(line[30:38]), float(line[38:46]), float(line[46:54])))
            except ValueError:
                continue
    return found


def _cif_ca(lines: list[str], wanted) -> list[tuple[float, float, float]]:
    start = next(i for i, line in enumerate(lines) if line.startswith("_atom_site."))
    names = []
    for line in lines[start:]:
        if not line.startswith("_atom_site."):
            break
        names.append(line.split()[0].removeprefix("_atom_site."))
    column = {name: k for k, name in enumerate(names)}
    chain_key = "auth_asym_id" if "auth_asym_id" in column else "label_asym_id"
    atom_key = "label_atom_id" if "label_atom_id" in column else "auth_atom_id"
    found = []
    for line in lines[start + len(names) :]:
        if not line.strip() or line.startswith(("#", "loop_", "_", "data_")):
            break
        values = shlex.split(line) if '"' in line or "'" in line else line.split()
        if len(values) != len(names) or values[column["group_PDB"]] != "ATOM" or values[column[atom_key]] != "CA":
            continue
        if wanted is None or values[column[chain_key]] in wanted:
            found.append(tuple(float(values[column[f"Cartn_{axis}"]]) for axis in "xyz"))
    return found


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
