"""Structure I/O: fetch from RCSB (with a cache), parse PDB/mmCIF, select atoms.

Beads carry electron counts as weights: a CA bead stands for its whole residue
(all atoms, hydrogens included), an atom bead for its element.
"""

from __future__ import annotations

import gzip
import logging
import string
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import prody

from cryoflow.errors import InputError
from cryoflow.io.fileio import atomic_path
from cryoflow.io.structure_text import cached_path

prody.confProDy(verbosity="warning")
log = logging.getLogger(__name__)

RCSB_DOWNLOAD_URL = "https://files.rcsb.org/download"
MAX_DOWNLOAD_BYTES = 512 * 1024 * 1024

ATOMIC_NUMBER = {"H": 1, "C": 6, "N": 7, "O": 8, "P": 15, "S": 16, "SE": 34}

# Residue formulas inside a polypeptide chain (one water lost per peptide bond).
RESIDUE_FORMULA = {
    "ALA": {"C": 3, "H": 5, "N": 1, "O": 1},
    "ARG": {"C": 6, "H": 12, "N": 4, "O": 1},
    "ASN": {"C": 4, "H": 6, "N": 2, "O": 2},
    "ASP": {"C": 4, "H": 5, "N": 1, "O": 3},
    "CYS": {"C": 3, "H": 5, "N": 1, "O": 1, "S": 1},
    "GLN": {"C": 5, "H": 8, "N": 2, "O": 2},
    "GLU": {"C": 5, "H": 7, "N": 1, "O": 3},
    "GLY": {"C": 2, "H": 3, "N": 1, "O": 1},
    "HIS": {"C": 6, "H": 7, "N": 3, "O": 1},
    "ILE": {"C": 6, "H": 11, "N": 1, "O": 1},
    "LEU": {"C": 6, "H": 11, "N": 1, "O": 1},
    "LYS": {"C": 6, "H": 12, "N": 2, "O": 1},
    "MET": {"C": 5, "H": 9, "N": 1, "O": 1, "S": 1},
    "MSE": {"C": 5, "H": 9, "N": 1, "O": 1, "SE": 1},
    "PHE": {"C": 9, "H": 9, "N": 1, "O": 1},
    "PRO": {"C": 5, "H": 7, "N": 1, "O": 1},
    "SER": {"C": 3, "H": 5, "N": 1, "O": 2},
    "THR": {"C": 4, "H": 7, "N": 1, "O": 2},
    "TRP": {"C": 11, "H": 10, "N": 2, "O": 1},
    "TYR": {"C": 9, "H": 9, "N": 1, "O": 2},
    "VAL": {"C": 5, "H": 9, "N": 1, "O": 1},
}
RESIDUE_ELECTRONS = {
    name: sum(ATOMIC_NUMBER[el] * n for el, n in formula.items()) for name, formula in RESIDUE_FORMULA.items()
}
MEAN_RESIDUE_ELECTRONS = float(np.mean(list(RESIDUE_ELECTRONS.values())))

STRUCTURE_SUFFIXES = {".pdb": "pdb", ".ent": "pdb", ".cif": "cif", ".mmcif": "cif"}


def structure_format(path: str | Path) -> str:
    """'pdb' or 'cif' from a file name (``.gz`` allowed)."""
    suffixes = [s.lower() for s in Path(path).suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    fmt = STRUCTURE_SUFFIXES.get(suffixes[-1] if suffixes else "")
    if fmt is None:
        raise InputError(f"{path}: structure file must end in .pdb, .ent, .cif or .mmcif (optionally .gz)")
    return fmt


def load_structure(path: str | Path) -> prody.AtomGroup:
    """Parse a PDB or mmCIF file into a ProDy AtomGroup (first model, first altloc).

    Chains are the author's chain ids (mmCIF ``auth_asym_id``, which ProDy
    keeps as segment names), as ChimeraX, PyMOL and papers name them; they
    may be longer than one character in large assemblies.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: structure file not found (config key structure.source)")
    fmt = structure_format(path)
    parse = prody.parsePDB if fmt == "pdb" else prody.parseMMCIF
    try:
        atoms = parse(str(path), model=1)
    except Exception as err:  # ProDy raises bare ValueError/IOError on bad files
        raise InputError(f"{path}: could not parse as {fmt.upper()}: {err}") from err
    if atoms is None or atoms.numAtoms() == 0:
        raise InputError(f"{path}: no atoms found in {fmt.upper()} file")
    authors = atoms.getSegnames()
    if fmt == "cif" and authors is not None and all(str(a).strip() for a in authors):
        atoms.setChids([str(a).strip() for a in authors])
    return atoms


def fetch_structure(
    pdb_id: str,
    cache_dir: str | Path,
    file_format: str = "cif",
    base_url: str = RCSB_DOWNLOAD_URL,
    timeout_s: float = 60.0,
) -> Path:
    """Download ``pdb_id`` from RCSB into ``cache_dir`` unless already cached.

    mmCIF is the default because large entries exist only as mmCIF. The file
    is parsed before it enters the cache, so a truncated or HTML error page
    never poisons it.
    """
    if file_format not in ("cif", "pdb"):
        raise InputError(f"structure.format must be 'cif' or 'pdb', got {file_format!r}")
    pdb_id = pdb_id.lower()
    cache_dir = Path(cache_dir)
    cached = cached_path(pdb_id, cache_dir, file_format)
    if cached.is_file():
        log.info("using cached %s", cached)
        return cached
    url = f"{base_url.rstrip('/')}/{pdb_id.upper()}.{file_format}.gz"
    log.info("downloading %s", url)
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            payload = response.read(MAX_DOWNLOAD_BYTES + 1)
    except urllib.error.HTTPError as err:
        if err.code == 404:
            raise InputError(f"PDB id {pdb_id.upper()!r} (structure.source): not found at {url}") from err
        raise InputError(f"PDB id {pdb_id.upper()!r} (structure.source): HTTP {err.code} from {url}") from err
    except (urllib.error.URLError, TimeoutError, OSError) as err:
        raise InputError(
            f"PDB id {pdb_id.upper()!r} (structure.source): could not reach {url} ({err}); "
            "offline? Give a local file in structure.source or pre-fill structure.cache_dir"
        ) from err
    if len(payload) > MAX_DOWNLOAD_BYTES:
        raise InputError(f"{url}: download larger than {MAX_DOWNLOAD_BYTES} bytes, refused")
    try:
        text = gzip.decompress(payload)
    except OSError as err:
        raise InputError(f"{url}: download is not a gzip file ({len(payload)} bytes)") from err
    with atomic_path(cached) as tmp:  # the temporary name keeps the .cif/.pdb suffix
        tmp.write_bytes(text)
        try:
            atoms = load_structure(tmp)
        except InputError as err:
            raise InputError(f"{url}: downloaded file does not parse: {err}") from err
        log.info("downloaded %s: %d atoms, %d bytes", pdb_id.upper(), atoms.numAtoms(), len(text))
    return cached


def select_atoms(
    atoms: prody.AtomGroup, chains: list[str] | None, beads: str, source: str = "structure"
) -> prody.AtomGroup:
    """Protein atoms of the given chains, as CA beads (``beads='CA'``) or heavy atoms.

    Waters, ligands and hydrogens are dropped; the result is a fresh AtomGroup.
    """
    if beads not in ("CA", "heavy"):
        raise InputError(f"structure.beads must be 'CA' or 'heavy', got {beads!r}")
    selection = "protein and not hydrogen" + (" and name CA" if beads == "CA" else "")
    picked = atoms.select(selection)
    indices = picked.getIndices() if picked is not None else np.array([], dtype=int)
    if chains:  # by value, not in the selection string: ids such as 'A-2' are not selection syntax
        indices = indices[np.isin(atoms.getChids()[indices], [str(c) for c in chains])]
    if len(indices) == 0:
        present = sorted({str(c) for c in atoms.getChids()}) if atoms.getChids() is not None else []
        usable = sorted({str(c) for c in picked.getChids()}) if picked is not None else []
        what = "protein CA atoms" if beads == "CA" else "protein heavy atoms"
        raise InputError(
            f"{source}: chains {chains} hold no {what} (structure.chains); chains with {what}: {usable}"
            + (f" (chains present: {present})" if present != usable else "")
        )
    picked = atoms[indices]
    return picked.copy()


def chain_atoms(atoms: prody.AtomGroup, chains: list[str] | None) -> prody.AtomGroup:
    """Every atom (protein, ligands, water) of the given chains: the starting model for molecular dynamics."""
    if not chains:
        return atoms.copy()
    indices = np.flatnonzero(np.isin(atoms.getChids(), [str(c) for c in chains]))
    return atoms[indices].copy()


def bead_weights(atoms: prody.AtomGroup, beads: str) -> np.ndarray:
    """Electron count per bead: whole residue for CA beads, element for atoms."""
    if beads == "CA":
        names = atoms.getResnames()
        return np.array([RESIDUE_ELECTRONS.get(n, MEAN_RESIDUE_ELECTRONS) for n in names], dtype=np.float64)
    elements = atoms.getElements()
    names = atoms.getNames()
    weights = []
    for element, name in zip(elements, names):
        element = (element or "").strip().upper() or name.strip()[:1].upper()
        weights.append(ATOMIC_NUMBER.get(element, 6))
    return np.asarray(weights, dtype=np.float64)


PDB_CHAIN_IDS = string.ascii_uppercase + string.ascii_lowercase + string.digits


def pdb_chain_map(chain_ids) -> dict[str, str]:
    """One-character PDB chain ids for mmCIF chain ids, which may be longer ('AA', 'A-2').

    Ids that already fit keep their letter; the others take the first free
    of A–Z, a–z, 0–9, in order of appearance. More than 62 chains cannot be
    written as PDB.
    """
    unique = list(dict.fromkeys(str(c) for c in chain_ids))
    mapping = {c: c for c in unique if len(c) == 1 and c in PDB_CHAIN_IDS}
    free = [c for c in PDB_CHAIN_IDS if c not in mapping.values()]
    for chain in unique:
        if chain not in mapping:
            if not free:
                raise InputError(
                    f"structure: {len(unique)} chains do not fit the PDB format's 62 chain ids; select fewer "
                    "(structure.chains)"
                )
            mapping[chain] = free.pop(0)
    return mapping


def write_pdb(path: str | Path, atoms: prody.AtomGroup, coords: np.ndarray | None = None) -> dict[str, str]:
    """Write ``atoms`` (optionally with other coordinates) as a PDB file, atomically.

    Chain ids longer than one character (mmCIF assemblies) are renamed by
    ``pdb_chain_map``; the mapping is returned (identity for ordinary files).
    """
    atoms = atoms.copy()
    if coords is not None:
        atoms.setCoords(np.asarray(coords, dtype=np.float64))
    mapping = pdb_chain_map(atoms.getChids())
    atoms.setChids([mapping[str(c)] for c in atoms.getChids()])
    with atomic_path(path) as tmp:
        prody.writePDB(str(tmp), atoms)
    return {old: new for old, new in mapping.items() if old != new}
