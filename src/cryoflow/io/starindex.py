"""Which stacks each job of a dataset reads, known before any job runs (standard library only).

The Snakefile calls this while it builds the DAG, in whatever Python runs
Snakemake (no numpy, pandas or starfile there), so that particle stacks are
real inputs of the jobs that read them: a stack that is fixed or replaced
reruns those jobs and nothing else. The rule scripts take their row choices
(shards, the noise sample, the whitening subset) from the same functions,
so the DAG and the jobs agree row for row.

Only what the DAG needs is parsed: the particle loop's image names, optics
group (or pixel-size) columns and the columns ``select`` filters on, the
optics block's pixel sizes (to refuse a resampling that cannot fit in
memory); MRC headers are ``mrcheader``'s. A STAR file naming 10 000 stacks indexes in well
under a second.
"""

from __future__ import annotations

import math
import random
import shlex
from dataclasses import dataclass
from pathlib import Path

from cryoflow.errors import InputError

IMAGE_NAME = "rlnImageName"
OPTICS_GROUP = "rlnOpticsGroup"
# the columns that give a particle's pixel size, in the order particles.particle_table tries them
PIXEL_COLUMNS = (("rlnImagePixelSize",), ("rlnPixelSize",), ("rlnDetectorPixelSize", "rlnMagnification"))
# a particle's CTF as RELION writes it (a particle row's or its optics group's): each must be a finite number
CTF_COLUMNS = (
    "rlnDefocusU",
    "rlnDefocusV",
    "rlnDefocusAngle",
    "rlnVoltage",
    "rlnSphericalAberration",
    "rlnAmplitudeContrast",
    "rlnPhaseShift",
    "rlnCtfBfactor",
)
CRYOSPARC_CTF = {  # cryoSPARC field → (RELION column, factor): the particle stage's conversion (io.cryosparc)
    "ctf/df1_A": ("rlnDefocusU", 1.0),
    "ctf/df2_A": ("rlnDefocusV", 1.0),
    "ctf/df_angle_rad": ("rlnDefocusAngle", 180.0 / math.pi),
    "ctf/accel_kv": ("rlnVoltage", 1.0),
    "ctf/cs_mm": ("rlnSphericalAberration", 1.0),
    "ctf/amp_contrast": ("rlnAmplitudeContrast", 1.0),
    "ctf/phase_shift_rad": ("rlnPhaseShift", 180.0 / math.pi),
    "ctf/bfactor": ("rlnCtfBfactor", 1.0),
}
CRYOSPARC_UID = "cryosparcUid"  # a .cs particle's uid, as the particle table keeps it


def split_row(line: str) -> list[str]:
    return shlex.split(line) if ('"' in line or "'" in line) else line.split()


def loop_blocks(path: str | Path) -> dict[str, tuple[list[str], list[list[str]]]]:
    """Every loop block of a STAR file: name → (column names without '_', rows of strings).

    A data row with fewer or more fields than its loop has columns stops with the line number.
    """
    blocks: dict[str, tuple[list[str], list[list[str]]]] = {}
    name: str | None = None
    columns: list[str] = []
    rows: list[list[str]] = []
    in_loop = False
    with open(path, errors="replace") as handle:
        for number, raw in enumerate(handle, 1):
            line = raw.strip()
            if line.startswith("data_"):
                name, columns, rows, in_loop = line[5:], [], [], False
            elif line == "loop_":
                columns, rows, in_loop = [], [], True
                blocks[name or ""] = (columns, rows)
            elif not in_loop or not line or line.startswith("#"):
                continue
            elif line.startswith("_") and not rows:
                columns.append(line.split()[0][1:])
            elif line.startswith("_"):
                in_loop = False
            else:
                fields = split_row(line)
                if len(fields) != len(columns):
                    raise InputError(
                        f"{path}, line {number}: {len(fields)} fields where data_{name} has {len(columns)} columns"
                    )
                rows.append(fields)
    return blocks


def particle_loop(path: str | Path, blocks: dict | None = None) -> tuple[list[str], list[list[str]]]:
    """The loop holding the particles: ``particles``, ``images`` or the first with ``_rlnImageName`` (of
    ``blocks``, the file's ``loop_blocks``, where already read)."""
    blocks = loop_blocks(path) if blocks is None else blocks
    for name in ("particles", "images", *blocks):
        if name in blocks and IMAGE_NAME in blocks[name][0]:
            return blocks[name]
    raise InputError(f"{path}: no data block has the column _{IMAGE_NAME}")


def _as_float(values: list[str]) -> list[float] | None:
    try:
        return [float(v) for v in values]
    except ValueError:
        return None


def select_rows(columns: dict[str, list[str]], n: int, select: dict | None, path) -> list[int]:
    """Rows whose columns take one of the given values, as ``particles.select_particles`` keeps them."""
    keep = list(range(n))
    for column, wanted in (select or {}).items():
        name = column.lstrip("_")
        if name not in columns:
            raise InputError(f"{path}: column _{name} (select) not found")
        wanted = wanted if isinstance(wanted, list) else [wanted]
        values = columns[name]
        numbers, wanted_numbers = _as_float(values), _as_float([str(w) for w in wanted])
        if numbers is not None and wanted_numbers is not None:
            allowed_numbers = set(wanted_numbers)
            keep = [i for i in keep if numbers[i] in allowed_numbers]
        else:
            allowed = {str(w) for w in wanted}
            keep = [i for i in keep if values[i] in allowed]
    if not keep:
        raise InputError(f"{path}: no particle matches select {select}")
    return keep


def ctf_numbers(columns: dict[str, list[str]], rows, path, names: list[str] | None = None) -> dict[str, list[float]]:
    """The CTF columns of ``rows`` as numbers. A value that is not a finite number is refused, naming the file,
    the particle (1-based, its image where known) and the column: a NaN defocus would give a NaN posterior,
    silently."""
    numbers = {}
    for column in CTF_COLUMNS:
        values = columns.get(column)
        if values is None:
            continue
        parsed = []
        for i in rows:
            try:
                number = float(values[i])
            except ValueError:
                number = math.nan
            if not math.isfinite(number):
                image = f" ({names[i]})" if names else ""
                raise InputError(f"{path}: particle {i + 1}{image} has _{column} {values[i]!r}, not a finite number")
            parsed.append(number)
        numbers[column] = parsed
    return numbers


def group_labels(columns: dict[str, list[str]], n: int, pixel_size_A=None) -> list[str]:
    """A label per particle that partitions them as the particle stage's optics groups do."""
    if OPTICS_GROUP in columns:
        return columns[OPTICS_GROUP]
    if not pixel_size_A:
        for names in PIXEL_COLUMNS:
            if all(c in columns for c in names):
                return [" ".join(repr(float(columns[c][i])) for c in names) for i in range(n)]
    return ["1"] * n


@dataclass
class DatasetIndex:
    """The selected particles of a STAR file: each one's stack (name as written) and group label."""

    star: Path
    stack_names: list[str]  # per selected particle
    groups: list[str]  # per selected particle
    columns: tuple[str, ...] = ()  # the particle table's columns (RELION names; a .cs file's own fields)
    pixel_sizes_A: tuple[float, ...] = ()  # the selected particles' distinct pixel sizes (empty: not known here)
    defocus_span_A: tuple[float, float] | None = None  # lowest and highest mean defocus (U+V)/2, where given

    def has_defocus(self) -> bool:
        """Whether each particle carries a fitted defocus (``_rlnDefocusU``, or ``ctf/df1_A`` of a .cs file)."""
        return bool({"rlnDefocusU", "ctf/df1_A"} & set(self.columns))

    def __len__(self) -> int:
        return len(self.stack_names)

    def stacks(self, rows=None) -> list[str]:
        """Distinct stack names of ``rows`` (all particles by default), in order of first appearance."""
        names = self.stack_names if rows is None else (self.stack_names[i] for i in rows)
        return list(dict.fromkeys(names))


def index_star(path: str | Path, select: dict | None = None, pixel_size_A=None) -> DatasetIndex:
    """Index a RELION STAR file (3.0, 3.1, 5) for the DAG: selected rows, their stacks, groups and pixel sizes."""
    path = Path(path)
    blocks = loop_blocks(path)
    names, rows = particle_loop(path, blocks)
    wanted = {IMAGE_NAME, OPTICS_GROUP, *CTF_COLUMNS, *(c.lstrip("_") for c in (select or {}))}
    wanted |= {c for group in PIXEL_COLUMNS for c in group}
    columns = {c: [row[i] for row in rows] for i, c in enumerate(names) if c in wanted}
    keep = select_rows(columns, len(rows), select, path)
    numbers = ctf_numbers(columns, keep, path, columns.get(IMAGE_NAME))
    optics = blocks.get("optics")
    if optics is not None:  # RELION 3.1+: the optics groups' voltage, Cs and amplitude contrast
        optics_columns = {c: [row[i] for row in optics[1]] for i, c in enumerate(optics[0]) if c in CTF_COLUMNS}
        try:
            ctf_numbers(optics_columns, range(len(optics[1])), path)
        except InputError as err:
            raise InputError(str(err).replace(": particle ", ": optics group ", 1)) from None
    groups = group_labels(columns, len(rows), pixel_size_A)
    stacks = [name.split("@", 1)[1] if "@" in name else name for name in columns[IMAGE_NAME]]
    kept_groups = [groups[i] for i in keep]
    pixels = (float(pixel_size_A),) if pixel_size_A else particle_pixel_sizes(blocks, columns, keep, kept_groups)
    kept_stacks = [stacks[i] for i in keep]
    return DatasetIndex(path, kept_stacks, kept_groups, tuple(names), pixels, defocus_span(numbers))


def particle_pixel_sizes(blocks: dict, columns: dict[str, list[str]], keep: list[int], groups: list[str]):
    """The distinct pixel sizes (Å) of the kept particles, read as ``particles.particle_table`` reads them:
    the particle columns, else the optics groups' ``_rlnImagePixelSize`` (``blocks``: the file's
    ``loop_blocks``); () where not readable here (the particle stage then names what is missing)."""

    def distinct(values):
        try:
            return tuple(sorted({float(v) for v in values}))
        except ValueError:
            return ()

    for names in PIXEL_COLUMNS:
        if all(c in columns for c in names):
            if len(names) == 1:
                return distinct(columns[names[0]][i] for i in keep)
            detector, magnification = (columns[c] for c in names)
            try:
                return tuple(sorted({float(detector[i]) * 1e4 / float(magnification[i]) for i in keep}))
            except (ValueError, ZeroDivisionError):
                return ()
    optics = blocks.get("optics")
    if optics is None or "rlnImagePixelSize" not in optics[0]:
        return ()
    names, rows = optics
    pixel = names.index("rlnImagePixelSize")
    if OPTICS_GROUP not in names:
        return distinct(row[pixel] for row in rows)
    group = names.index(OPTICS_GROUP)
    used = set(groups) if OPTICS_GROUP in columns else {row[group] for row in rows}
    return distinct(row[pixel] for row in rows if row[group] in used)


def defocus_span(numbers: dict[str, list[float]]) -> tuple[float, float] | None:
    """Lowest and highest mean defocus (U + V)/2 (V as U where absent) of parsed CTF columns (``ctf_numbers``),
    None without a defocus."""
    u = numbers.get("rlnDefocusU")
    if not u:
        return None
    means = [0.5 * (a + b) for a, b in zip(u, numbers.get("rlnDefocusV", u))]
    return min(means), max(means)


def check_uids(uids, path) -> None:
    """A particle export's uids must be unique: results go back to cryoSPARC by uid, so a repeated one would
    put one particle's posterior on another."""
    first: dict[int, int] = {}
    for row, uid in enumerate(int(u) for u in uids):
        if uid in first:
            raise InputError(f"{path}: uid {uid} repeats (rows {first[uid] + 1} and {row + 1}): a corrupt export")
        first[uid] = row


def index_cs(path: str | Path, select: dict | None = None) -> DatasetIndex | None:
    """Index a cryoSPARC ``.cs`` export, where numpy is at hand (None otherwise: its stacks go untracked).

    The groups are ``ctf/exp_group_id`` (the particle stage's optics groups), or one group. ``select``
    filters on the RELION names the particle stage gives the fields (``CRYOSPARC_CTF``, ``rlnOpticsGroup``,
    ``cryosparcUid``). Each particle needs a unique ``uid`` and finite CTF values.
    """
    try:
        import numpy as np
    except ImportError:
        return None
    path = Path(path)
    try:
        records = np.load(path, allow_pickle=False)
        stacks = [p.decode() if isinstance(p, bytes) else str(p) for p in records["blob/path"]]
        indices = [f"{int(i) + 1:06d}" for i in records["blob/idx"]]
    except Exception as err:
        raise InputError(f"{path}: not a cryoSPARC particle export with blob/path and blob/idx ({err})") from err
    names = records.dtype.names or ()
    if "uid" not in names:
        raise InputError(f"{path}: no uid field (each particle's cryoSPARC id, by which results go back)")
    check_uids(records["uid"], path)
    stacks = [s[1:] if s.startswith(">") else s for s in stacks]
    groups = records["ctf/exp_group_id"].astype(int).astype(str) if "ctf/exp_group_id" in names else ["1"] * len(stacks)
    numbers = {
        column: records[field].astype(np.float64) * factor
        for field, (column, factor) in CRYOSPARC_CTF.items()
        if field in names
    }

    def text(column: str) -> list[str]:  # a column as the STAR side has it: what select and the errors read
        if column == OPTICS_GROUP:
            return [str(g) for g in groups]
        if column == CRYOSPARC_UID:
            return [str(int(u)) for u in records["uid"]]
        return [repr(float(v)) for v in numbers[column]]

    wanted = {c.lstrip("_") for c in (select or {})} & {*numbers, OPTICS_GROUP, CRYOSPARC_UID}
    keep = select_rows({column: text(column) for column in wanted}, len(stacks), select, path)
    rows = np.asarray(keep, dtype=np.int64)
    bad = [column for column, values in numbers.items() if not np.isfinite(values[rows]).all()]
    if bad:  # refused by the STAR side's check, with its message
        images = [f"{i}@{s}" for i, s in zip(indices, stacks)]
        ctf_numbers({column: text(column) for column in bad}, keep, path, images)
    defocus: dict[str, list[float]] = {
        c: numbers[c][rows].tolist() for c in ("rlnDefocusU", "rlnDefocusV") if c in numbers
    }
    kept = records[rows]
    pixels = tuple(float(p) for p in np.unique(kept["blob/psize_A"])) if "blob/psize_A" in names else ()
    kept_stacks, kept_groups = [stacks[i] for i in keep], [str(groups[i]) for i in keep]
    return DatasetIndex(path, kept_stacks, kept_groups, tuple(names), pixels, defocus_span(defocus))


def shard_rows(n: int, n_shards: int) -> list[range]:
    """Rows 0..n-1 in ``n_shards`` contiguous, near-equal shards (the first n mod n_shards one longer)."""
    size, extra = divmod(n, n_shards)
    starts = [k * size + min(k, extra) for k in range(n_shards + 1)]
    return [range(starts[k], starts[k + 1]) for k in range(n_shards)]


def sample_rows(n: int, k: int, seed: int) -> list[int]:
    """A seeded random subset of min(k, n) rows of 0..n-1, sorted."""
    return sorted(random.Random(seed).sample(range(n), min(k, n)))


def noise_rows(groups: list, per_group: int, seed: int) -> dict[str, list[int]]:
    """The particles each group's noise spectrum is measured on: a seeded random ``per_group`` of each.

    One seeded permutation of all rows, read group by group, so the choice depends on the partition
    into groups and not on the labels.
    """
    order = list(range(len(groups)))
    random.Random(seed).shuffle(order)
    picked: dict[str, list[int]] = {}
    for row in order:
        rows = picked.setdefault(str(groups[row]), [])
        if len(rows) < per_group:
            rows.append(row)
    return {group: sorted(rows) for group, rows in picked.items()}


def resolve_stack_path(
    stack: str, star_path: str | Path, datadir: str | Path | None = None, field: str = IMAGE_NAME
) -> Path:
    """Find a stack named in a STAR file the way RELION job folders need.

    Tried in order: ``datadir``/path and ``datadir``/basename (when given), the
    path as written (absolute or relative to the working directory), relative
    to the STAR file's folder and each of its parents (a RELION project root
    lies above the job folder), then the basename in the STAR file's folder.
    """
    written = Path(stack)
    # the field that names it: a cryoSPARC export's blob/path, a STAR file's column
    where = "blob/path" if str(star_path).endswith(".cs") and field == IMAGE_NAME else f"_{field}"
    star_dir = Path(star_path).resolve().parent
    candidates = []
    if datadir is not None:
        candidates += [Path(datadir) / written, Path(datadir) / written.name]
    candidates.append(written)
    if not written.is_absolute():
        candidates += [folder / written for folder in (star_dir, *star_dir.parents)]
    candidates.append(star_dir / written.name)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise InputError(
        f"{star_path}: {'stack' if field == IMAGE_NAME else 'file'} {stack!r} in {where} not found (tried "
        f"{len(candidates)} places; set datadir)"
    )


MICROGRAPH_NAME = "rlnMicrographName"


def micrograph_block(path: str | Path) -> tuple[list[str], list[list[str]]]:
    """Columns and rows of the loop that names micrographs (``data_micrographs`` of a RELION CTF job)."""
    blocks = loop_blocks(path)
    for name in ("micrographs", *blocks):
        if name in blocks and MICROGRAPH_NAME in blocks[name][0]:
            return blocks[name]
    raise InputError(f"{path}: no data block has the column _{MICROGRAPH_NAME}")


def index_micrographs(path: str | Path, datadir: str | Path | None = None) -> list[tuple[str, Path]]:
    """(name as written, resolved file) of every micrograph a micrograph STAR file names, in file order."""
    columns, rows = micrograph_block(path)
    column = columns.index(MICROGRAPH_NAME)
    if not rows:
        raise InputError(f"{path}: no micrographs in its _{MICROGRAPH_NAME} loop")
    names = [row[column] for row in rows]
    return [(name, resolve_stack_path(name, path, datadir, MICROGRAPH_NAME)) for name in names]
