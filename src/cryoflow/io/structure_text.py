"""A structure source read as text with the standard library alone, for the DAG side: is it a PDB id, does a
file hold atoms, and where are its CA atoms (``cryoflow.io.structure`` reads structures with ProDy)."""

from __future__ import annotations

import gzip
import re
import shlex
from pathlib import Path

# 4-character PDB ids (4AKE) and extended ids (pdb_00004ake)
PDB_ID_PATTERN = re.compile(r"^[0-9][A-Za-z0-9]{3}$|^pdb_[0-9]{5}[A-Za-z0-9]{3}$", re.IGNORECASE)


def is_pdb_id(source: str) -> bool:
    """True for a 4-character PDB id (``4AKE``) or an extended id (``pdb_00004ake``) that is not a local file."""
    return bool(PDB_ID_PATTERN.match(str(source))) and not Path(source).exists()


def cached_path(pdb_id: str, cache_dir: str | Path, file_format: str) -> Path:
    """Where a fetched entry lies in the cache (``structure.cache_dir``): ``<id>.<format>``, the id lower-case."""
    return Path(cache_dir) / f"{pdb_id.lower()}.{file_format}"


def looks_like_structure(path: str | Path) -> bool:
    """True when a file holds ATOM/HETATM records (PDB) or an _atom_site loop (mmCIF)."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt", errors="replace") as handle:
        return any(line.startswith(("ATOM", "HETATM", "_atom_site.")) for line in handle)


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
    found: list[tuple[float, float, float]] = []
    for line in lines[start + len(names) :]:
        if not line.strip() or line.startswith(("#", "loop_", "_", "data_")):
            break
        values = shlex.split(line) if '"' in line or "'" in line else line.split()
        if len(values) != len(names) or values[column["group_PDB"]] != "ATOM" or values[column[atom_key]] != "CA":
            continue
        if wanted is None or values[column[chain_key]] in wanted:
            x, y, z = (float(values[column[f"Cartn_{axis}"]]) for axis in "xyz")
            found.append((x, y, z))
    return found
