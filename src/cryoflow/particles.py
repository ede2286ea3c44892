"""Experimental particles: RELION STAR or cryoSPARC ``.cs`` metadata and MRC stacks, streamed from disk.

Reading follows RELION: ``_rlnImageName`` is ``idx@path`` with a 1-based
index; pixel sizes come from the optics block (3.1 and 5) or from
``_rlnDetectorPixelSize`` (µm) and ``_rlnMagnification`` (3.0). cryoSPARC
exports are turned into the same RELION-named table (``blob/idx`` is
0-based, ``blob/path`` may start with ``>``). Stack paths stay data: they
are resolved against the file system, never executed.

Stacks are opened leniently (no ``MAP `` stamp, volume space group, voxel
size 0, extended headers): the header gives mode, shape and data offset,
and the images are read through a memory map that lives only for one
chunk, so the resident memory never grows with the dataset.
"""

from __future__ import annotations

import logging
import re
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import mrcfile
import numpy as np
import pandas as pd
import starfile

from cryoflow.fileio import InputError, atomic_path
from cryoflow.starindex import loop_blocks, resolve_stack_path

log = logging.getLogger(__name__)

IMAGE_NAME = "rlnImageName"
OPTICS_GROUP = "rlnOpticsGroup"
# MRC modes a particle stack may use, as their numpy types (little-endian as written by RELION and cryoSPARC)
MRC_MODES = {0: "i1", 1: "<i2", 2: "<f4", 6: "<u2", 12: "<f2"}


# ---------------------------------------------------------------- STAR files
def read_star(path: str | Path) -> OrderedDict:
    """All data blocks of a STAR file as an ordered dict of DataFrames."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: STAR file not found (config key datasets.<name>.star)")
    loop_blocks(path)  # every row as many fields as its loop has columns, or an error naming the line
    try:
        blocks = starfile.read(path, always_dict=True)
    except Exception as err:
        raise InputError(f"{path}: could not parse STAR file: {err}") from err
    return OrderedDict(
        (name, df if isinstance(df, pd.DataFrame) else pd.DataFrame([df])) for name, df in blocks.items()
    )


def star_version(path: str | Path) -> int | str | None:
    """What a STAR file says of its version, to be written back as it came in.

    ``# version N`` (RELION 3.1: 30001, RELION 5: 50001) gives N; another version comment (a RELION 3.0
    file's ``# RELION; version 3.0.6``) is kept as its line; a file without one gives None.
    """
    with open(path, errors="replace") as handle:
        for _, line in zip(range(50), handle):
            match = re.match(r"#\s*version\s+(\d+)\s*$", line)
            if match:
                return int(match.group(1))
            if re.match(r"#.*\bversion\b", line, flags=re.IGNORECASE):
                return line.rstrip("\n")
    return None


def version_line(version: int | str | None) -> list[str]:
    """The header lines ``write_star`` starts a file with for ``star_version``'s answer."""
    if version is None:
        return []
    return [f"# version {version}" if isinstance(version, int) else str(version), ""]


def particle_block_name(blocks: OrderedDict, path) -> str:
    """Name of the block holding the particles (``particles``, ``images`` or the only block with image names)."""
    for name in ("particles", "images"):
        if name in blocks and IMAGE_NAME in blocks[name].columns:
            return name
    candidates = [name for name, df in blocks.items() if IMAGE_NAME in df.columns]
    if not candidates:
        raise InputError(f"{path}: no data block has the column _{IMAGE_NAME}")
    return candidates[0]


def particle_table(
    path: str | Path, blocks: OrderedDict | None = None, pixel_size_A: float | None = None
) -> pd.DataFrame:
    """Particles with optics merged in and resolved ``pixel_size_A`` and ``optics_group`` columns.

    ``pixel_size_A`` (config) overrides whatever the file says.
    """
    blocks = read_star(path) if blocks is None else blocks
    name = particle_block_name(blocks, path)
    table = blocks[name].copy()
    optics = blocks.get("optics")
    if optics is not None and OPTICS_GROUP not in table.columns and len(optics) == 1 and OPTICS_GROUP in optics:
        table[OPTICS_GROUP] = optics[OPTICS_GROUP].iloc[0]  # one optics group: every particle is in it
    if optics is not None and OPTICS_GROUP in table.columns and OPTICS_GROUP in optics.columns:
        unknown = sorted(set(table[OPTICS_GROUP]) - set(optics[OPTICS_GROUP]))
        if unknown:
            raise InputError(f"{path}: _{OPTICS_GROUP} {unknown[0]} of the particles is not in data_optics")
        extra = [c for c in optics.columns if c not in table.columns or c == OPTICS_GROUP]
        table = table.merge(optics[extra], on=OPTICS_GROUP, how="left", validate="many_to_one")
    if pixel_size_A:
        pixel = pd.Series(np.full(len(table), float(pixel_size_A)))
    elif "rlnImagePixelSize" in table.columns:
        pixel = numeric_column(table, "rlnImagePixelSize", path)
    elif "rlnPixelSize" in table.columns:
        pixel = numeric_column(table, "rlnPixelSize", path)
    elif {"rlnDetectorPixelSize", "rlnMagnification"} <= set(table.columns):
        detector = numeric_column(table, "rlnDetectorPixelSize", path)
        pixel = detector * 1e4 / numeric_column(table, "rlnMagnification", path)
    else:
        raise InputError(
            f"{path}: pixel size not found (_rlnImagePixelSize in optics, or _rlnDetectorPixelSize and "
            "_rlnMagnification); set the dataset's pixel_size_A"
        )
    table["pixel_size_A"] = pixel.to_numpy()
    bad = np.flatnonzero(~(table["pixel_size_A"].to_numpy() > 0))
    if len(bad):
        raise InputError(f"{path}, particle {bad[0] + 1}: pixel size {table['pixel_size_A'][bad[0]]} is not positive")
    table["optics_group"] = optics_groups(table)
    return table


def numeric_column(table: pd.DataFrame, column: str, path) -> pd.Series:
    """A column as floats, or an error naming the file, the first bad particle and the field."""
    values = pd.to_numeric(table[column], errors="coerce")
    bad = np.flatnonzero(values.isna().to_numpy())
    if len(bad):
        raise InputError(f"{path}, particle {bad[0] + 1}: _{column} {table[column].iloc[bad[0]]!r} is not a number")
    return values.astype(float)


def optics_groups(table: pd.DataFrame) -> np.ndarray:
    """One label per particle: ``_rlnOpticsGroup`` where present, otherwise one group per pixel size."""
    if OPTICS_GROUP in table.columns:
        return table[OPTICS_GROUP].astype(str).to_numpy()
    _, inverse = np.unique(table["pixel_size_A"].to_numpy(), return_inverse=True)
    return (inverse + 1).astype(str)


# ------------------------------------------------------------ cryoSPARC .cs
CRYOSPARC_CTF = {  # cryoSPARC field → (RELION column, factor)
    "ctf/df1_A": ("rlnDefocusU", 1.0),
    "ctf/df2_A": ("rlnDefocusV", 1.0),
    "ctf/df_angle_rad": ("rlnDefocusAngle", 180.0 / np.pi),
    "ctf/accel_kv": ("rlnVoltage", 1.0),
    "ctf/cs_mm": ("rlnSphericalAberration", 1.0),
    "ctf/amp_contrast": ("rlnAmplitudeContrast", 1.0),
    "ctf/phase_shift_rad": ("rlnPhaseShift", 180.0 / np.pi),
    "ctf/bfactor": ("rlnCtfBfactor", 1.0),
}


def read_cryosparc(path: str | Path) -> OrderedDict:
    """A cryoSPARC particle export as RELION-style ``optics`` and ``particles`` blocks.

    ``blob/path`` (a leading ``>`` dropped) and the 0-based ``blob/idx``
    become a 1-based ``_rlnImageName``; ``blob/psize_A`` becomes the optics
    group's ``_rlnImagePixelSize``; CTF fields get their RELION names and
    units (degrees). Loaded without pickle: the file is data only.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: cryoSPARC file not found (config key datasets.<name>.star)")
    try:
        records = np.load(path, allow_pickle=False)
    except Exception as err:
        raise InputError(f"{path}: not a cryoSPARC .cs array ({err})") from err
    names = records.dtype.names or ()
    missing = [f for f in ("blob/path", "blob/idx") if f not in names]
    if missing:
        raise InputError(f"{path}: field(s) {', '.join(missing)} missing (not a particle export)")
    stacks = [p.decode() if isinstance(p, bytes) else str(p) for p in records["blob/path"]]
    stacks = [s[1:] if s.startswith(">") else s for s in stacks]
    table = pd.DataFrame({IMAGE_NAME: [f"{int(i) + 1:06d}@{s}" for i, s in zip(records["blob/idx"], stacks)]})
    for field, (column, factor) in CRYOSPARC_CTF.items():
        if field in names:
            table[column] = records[field].astype(np.float64) * factor
    group = records["ctf/exp_group_id"].astype(int) if "ctf/exp_group_id" in names else np.ones(len(records), int)
    table[OPTICS_GROUP] = group
    if "uid" in names:
        table["cryosparcUid"] = records["uid"].astype(np.uint64).astype(str)
    optics = pd.DataFrame({OPTICS_GROUP: np.unique(group)})
    if "blob/psize_A" in names:
        pixel = pd.Series(records["blob/psize_A"].astype(float)).groupby(group).first()
        optics["rlnImagePixelSize"] = pixel.reindex(optics[OPTICS_GROUP]).to_numpy()
    if "blob/shape" in names:
        size = pd.Series(records["blob/shape"][:, -1].astype(int)).groupby(group).first()
        optics["rlnImageSize"] = size.reindex(optics[OPTICS_GROUP]).to_numpy()
    return OrderedDict([("optics", optics), ("particles", table)])


def read_metadata(path: str | Path) -> OrderedDict:
    """Blocks of a STAR file, or of a cryoSPARC ``.cs`` export converted to RELION names."""
    return read_cryosparc(path) if str(path).endswith(".cs") else read_star(path)


def select_particles(table: pd.DataFrame, select: dict | None, path) -> pd.DataFrame:
    """Keep the particles whose columns take one of the given values, e.g. ``{"rlnClassNumber": [1, 3]}``."""
    if not select:
        return table
    keep = np.ones(len(table), bool)
    for column, values in select.items():
        name = column.lstrip("_")
        if name not in table.columns:
            raise InputError(f"{path}: column _{name} (select) not found")
        values = values if isinstance(values, list) else [values]
        numeric = pd.to_numeric(table[name], errors="coerce")
        wanted = pd.to_numeric(pd.Series(values), errors="coerce")
        if numeric.notna().all() and wanted.notna().all():
            keep &= numeric.isin(wanted).to_numpy()
        else:
            keep &= table[name].astype(str).isin([str(v) for v in values]).to_numpy()
    if not keep.any():
        raise InputError(f"{path}: no particle matches select {select}")
    log.info("%s: %d of %d particles match %s", path, keep.sum(), len(table), select)
    return table[keep].reset_index(drop=True)


@dataclass
class ParticleSet:
    """What the particle stage reads: the metadata blocks, the particle table and where it came from."""

    path: Path
    blocks: OrderedDict
    block_name: str
    table: pd.DataFrame
    version: int


def load_particles(path, pixel_size_A=None, select=None) -> ParticleSet:
    """Read a STAR or ``.cs`` file, resolve pixel sizes and optics groups, apply ``select``."""
    path = Path(path)
    blocks = read_metadata(path)
    table = particle_table(path, blocks, pixel_size_A)
    if table.empty:
        raise InputError(f"{path}: no particle rows in data_{particle_block_name(blocks, path)}")
    table = select_particles(table, select, path)
    version = 30001 if path.suffix == ".cs" else star_version(path)
    return ParticleSet(path, blocks, particle_block_name(blocks, path), table, version)


def ctf_priors(table: pd.DataFrame, path) -> dict:
    """Prior ranges found in a particle table's CTF and optics columns (RELION names).

    Returns ``defocus_range_A`` (mean of U and V), ``astigmatism_max_A``
    (largest |U − V| / 2), ``phase_shift_range_deg`` and
    ``b_factor_range_A2`` (when the columns exist), ``optics`` (one entry per
    distinct voltage / Cs / amplitude contrast, weighted by particle count)
    and ``pixel_sizes_A``.
    """
    needed = ["rlnDefocusU", "rlnDefocusV", "rlnVoltage", "rlnSphericalAberration", "rlnAmplitudeContrast"]
    missing = [c for c in needed if c not in table.columns]
    if missing:
        names = ", ".join("_" + c for c in missing)
        raise InputError(f"{path}: column(s) {names} needed for simulator.priors_from_dataset")
    values = {}
    for column in needed + [c for c in ("rlnPhaseShift", "rlnCtfBfactor") if c in table.columns]:
        column_values = pd.to_numeric(table[column], errors="coerce").to_numpy(dtype=float)
        bad = np.flatnonzero(~np.isfinite(column_values))
        if len(bad):
            raise InputError(f"{path}, particle {bad[0] + 1}: _{column} is not a finite number")
        values[column] = column_values
    mean = 0.5 * (values["rlnDefocusU"] + values["rlnDefocusV"])
    found = {
        "defocus_range_A": [float(mean.min()), float(mean.max())],
        "astigmatism_max_A": float(np.abs(values["rlnDefocusU"] - values["rlnDefocusV"]).max() / 2),
        "pixel_sizes_A": sorted({float(p) for p in table["pixel_size_A"]}),
    }
    if "rlnPhaseShift" in values:
        found["phase_shift_range_deg"] = [float(values["rlnPhaseShift"].min()), float(values["rlnPhaseShift"].max())]
    if "rlnCtfBfactor" in values and np.any(values["rlnCtfBfactor"] != 0):
        # RELION's B-factor multiplies by exp(−B s²/4) with B ≥ 0 for decay, as cryoflow.ctf does
        found["b_factor_range_A2"] = [float(values["rlnCtfBfactor"].min()), float(values["rlnCtfBfactor"].max())]
    keys = np.stack([values["rlnVoltage"], values["rlnSphericalAberration"], values["rlnAmplitudeContrast"]], axis=1)
    groups, counts = np.unique(keys, axis=0, return_counts=True)
    found["optics"] = [
        {"voltage_kV": float(v), "cs_mm": float(cs), "amplitude_contrast": float(ac), "weight": int(c)}
        for (v, cs, ac), c in zip(groups, counts)
    ]
    return found


# ---------------------------------------------------------------- MRC stacks
def parse_image_name(name: str, path="STAR file", row: int | None = None) -> tuple[int, str]:
    """``'12@Extract/job007/stack.mrcs'`` → (11, 'Extract/job007/stack.mrcs'): 0-based index and path.

    A name without ``@`` is a single-image file (index 0).
    """
    where = f"{path}, particle {row + 1}" if row is not None else str(path)
    if not isinstance(name, str) or not name.strip():
        raise InputError(f"{where}: _{IMAGE_NAME} {name!r} is empty")
    if "@" not in name:
        return 0, name
    index, stack = name.split("@", 1)
    try:
        index = int(index)
    except ValueError as err:
        raise InputError(f"{where}: _{IMAGE_NAME} {name!r} has a non-integer index") from err
    if index < 1:
        raise InputError(f"{where}: _{IMAGE_NAME} {name!r}: indices are 1-based")
    return index - 1, stack


@dataclass(frozen=True)
class StackHeader:
    """Where the images of an MRC stack lie: data offset, dtype and the shape the file really holds."""

    path: Path
    offset: int
    dtype: np.dtype
    n_images: int
    box: int
    pixel_size_A: float


def read_stack_header(path: Path) -> StackHeader:
    """Parse an MRC header leniently and check it against the file's size.

    Missing ``MAP `` stamps, volume space groups (ispg=1), voxel size 0 and
    extended headers are accepted. The file must be as long as header +
    extended header + nx·ny·nz values of the header's mode: shorter stops;
    exactly the length of another mode stops (the mode word is wrong); any
    other surplus is read past with a warning naming both sizes.
    """
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with mrcfile.open(path, mode="r", permissive=True, header_only=True) as mrc:
                header = mrc.header.copy()
                extended = int(mrc.header.nsymbt)
        dtype = mrcfile.utils.data_dtype_from_header(header)
    except Exception as err:
        raise InputError(f"{path}: unreadable MRC header ({err})") from err
    for warning in caught:
        log.debug("%s: lenient read: %s", path, warning.message)
    nx, ny, nz = int(header.nx), int(header.ny), int(header.nz)
    if nx <= 0 or ny <= 0 or nz <= 0:
        raise InputError(f"{path}: unreadable MRC header (nx, ny, nz = {nx}, {ny}, {nz})")
    if nx != ny:
        raise InputError(f"{path}: images are {ny} × {nx} pixels; square particle images are needed")
    offset = 1024 + extended
    mode = int(header.mode)
    expected = offset + nx * ny * nz * dtype.itemsize
    size = path.stat().st_size
    shape = f"mode {mode} ({dtype.name}), {nx} × {ny} × {nz}, {extended}-byte extended header"
    if size < expected:
        raise InputError(f"{path}: the file has {size} bytes but its header ({shape}) needs {expected}: truncated, "
                         "or the header's mode or nz is wrong")  # fmt: skip
    if size > expected:
        for other, other_dtype in MRC_MODES.items():
            if other != mode and offset + nx * ny * nz * np.dtype(other_dtype).itemsize == size:
                raise InputError(
                    f"{path}: header mode {mode} ({dtype.name}) but the file's {size} bytes are exactly "
                    f"{nx} × {ny} × {nz} values of mode {other} ({np.dtype(other_dtype).name}): the header's "
                    "mode word is wrong"
                )
        log.warning("%s: the file has %d bytes, %d more than its header (%s) needs (%d); reading the %d images "
                    "the header describes", path, size, size - expected, shape, expected, nz)  # fmt: skip
    if int(header.ispg) == 1 and nz == nx and nz > 1:
        log.warning("%s: looks like a 3-D volume (space group 1, nz = nx = %d), not a particle stack; "
                    "its sections are read as %d images", path, nx, nz)  # fmt: skip
    mx = int(header.mx) or nx
    pixel = float(header.cella.x) / mx if float(header.cella.x) > 0 else 0.0
    return StackHeader(path, offset, dtype, nz, nx, pixel)


def iter_stack(path: str | Path, batch_size: int):
    """Yield an MRC stack's images in consecutive float32 batches, read with plain file reads.

    Unlike a memory map kept open over a whole stack, whose touched pages
    count as resident memory until it is closed, this holds one batch at a
    time however large the stack.
    """
    header = read_stack_header(Path(path))
    per_image = header.box * header.box
    with open(path, "rb") as handle:
        handle.seek(header.offset)
        for start in range(0, header.n_images, batch_size):
            count = min(batch_size, header.n_images - start)
            data = np.fromfile(handle, dtype=header.dtype, count=count * per_image)
            yield data.reshape(count, header.box, header.box).astype(np.float32, copy=False)


class ParticleSource:
    """Lazy images of the particles of a table, read from their stacks in chunks.

    Construction checks everything that can be checked without reading
    pixels: image names, stack paths and headers, indices against each
    stack's real length, one box size per optics group, and the table's
    ``_rlnImageSize`` against the stacks (the stacks win, with a warning).
    ``first_row``: the table's first row in the STAR file (a shard's
    offset), so that messages number particles as the file does.
    ``invert``: flip the contrast of every image (particles extracted with
    the protein dark, where the simulator makes it light).
    """

    def __init__(
        self,
        table: pd.DataFrame,
        star_path: str | Path,
        datadir: str | Path | None = None,
        first_row: int = 0,
        invert: bool = False,
    ):
        self.star_path = Path(star_path)
        self.sign = -1.0 if invert else 1.0
        self.table = table.reset_index(drop=True)
        self.first_row = int(first_row)
        if IMAGE_NAME not in self.table.columns:
            raise InputError(f"{star_path}: no _{IMAGE_NAME} column")
        parsed = [parse_image_name(n, star_path, first_row + i) for i, n in enumerate(self.table[IMAGE_NAME])]
        self.indices = np.array([p[0] for p in parsed], dtype=np.int64)
        names = sorted({p[1] for p in parsed})
        self.headers = [read_stack_header(resolve_stack_path(name, star_path, datadir)) for name in names]
        code = {name: i for i, name in enumerate(names)}
        self.stack_of = np.array([code[p[1]] for p in parsed], dtype=np.int64)
        self.pixel_size_A = self.table["pixel_size_A"].to_numpy(dtype=float)
        self.group = self.table["optics_group"].to_numpy() if "optics_group" in self.table else optics_groups(table)
        self.boxes = np.array([h.box for h in self.headers])[self.stack_of]
        self._check_bounds()
        self._check_boxes()

    def _check_bounds(self):
        lengths = np.array([h.n_images for h in self.headers])[self.stack_of]
        bad = np.flatnonzero(self.indices >= lengths)
        if len(bad):
            i = bad[0]
            header = self.headers[self.stack_of[i]]
            raise InputError(
                f"{self.star_path}, particle {self.first_row + i + 1}: _{IMAGE_NAME} index {self.indices[i] + 1} is "
                f"past the "
                f"end of {header.path} ({header.n_images} images)"
            )

    def _check_boxes(self):
        for group in np.unique(self.group):
            rows = np.flatnonzero(self.group == group)
            boxes = np.unique(self.boxes[rows])
            if len(boxes) > 1:
                first = rows[self.boxes[rows] == boxes[0]][0]
                other = rows[self.boxes[rows] == boxes[1]][0]
                number = self.first_row + 1
                raise InputError(
                    f"{self.star_path}: optics group {group} mixes box sizes: particle {number + first} "
                    f"({self.headers[self.stack_of[first]].path}) is {boxes[0]} px, particle {number + other} "
                    f"({self.headers[self.stack_of[other]].path}) is {boxes[1]} px (_{IMAGE_NAME})"
                )
            pixels = np.unique(self.pixel_size_A[rows])
            if len(pixels) > 1:
                raise InputError(
                    f"{self.star_path}: optics group {group} has several pixel sizes {pixels[:3].tolist()} Å"
                )
            if "rlnImageSize" in self.table.columns:
                stated = pd.to_numeric(self.table["rlnImageSize"].iloc[rows[0]], errors="coerce")
                if stated != boxes[0]:
                    log.warning(
                        "%s: optics group %s: _rlnImageSize says %s px but the stacks hold %d px images; "
                        "using the stacks",
                        self.star_path, group, stated, boxes[0],
                    )  # fmt: skip

    def __len__(self) -> int:
        return len(self.indices)

    def groups(self) -> list[str]:
        """Optics groups, in order of first appearance."""
        _, first = np.unique(self.group, return_index=True)
        return [self.group[i] for i in np.sort(first)]

    def group_rows(self, group) -> np.ndarray:
        return np.flatnonzero(self.group == group)

    def box(self, i: int) -> int:
        return int(self.boxes[i])

    def read(self, rows) -> np.ndarray:
        """Images (len(rows), box, box) as float32, in the order of ``rows`` (all of one box size).

        Each stack is memory-mapped only while its images of this call are
        copied out, in index order, so pages do not accumulate over a run.
        """
        rows = np.asarray(rows, dtype=np.int64)
        boxes = np.unique(self.boxes[rows])
        if len(boxes) > 1:
            raise ValueError(f"rows of several box sizes {boxes.tolist()} read together")
        out = np.empty((len(rows), boxes[0], boxes[0]), dtype=np.float32)
        for stack in np.unique(self.stack_of[rows]):
            where = np.flatnonzero(self.stack_of[rows] == stack)
            order = where[np.argsort(self.indices[rows[where]], kind="stable")]
            header = self.headers[stack]
            shape = (header.n_images, header.box, header.box)
            data = np.memmap(header.path, dtype=header.dtype, mode="r", offset=header.offset, shape=shape)
            out[order] = data[self.indices[rows[order]]]
            del data
        finite = np.isfinite(out).reshape(len(out), -1).all(axis=1)
        if not finite.all():
            bad = int(rows[np.flatnonzero(~finite)[0]])
            raise InputError(
                f"{self.headers[self.stack_of[bad]].path}: particle {self.first_row + bad + 1} of {self.star_path} "
                f"(_{IMAGE_NAME} {self.table[IMAGE_NAME][bad]}) has NaN or inf pixels"
            )
        if self.sign < 0:
            np.negative(out, out=out)
        return out


def open_dataset(star, source: dict) -> ParticleSource:
    """All selected particles of a dataset; ``source`` holds its datadir, select, pixel_size_A and contrast."""
    found = load_particles(star, source["pixel_size_A"], source["select"])
    return ParticleSource(found.table, star, source["datadir"], invert=source["contrast"] == "dark")


# ------------------------------------------------------------ writing STAR
def format_star_value(value) -> str:
    if isinstance(value, (float, np.floating)):
        return f"{value:.6f}" if abs(value) >= 1e-3 or value == 0 else f"{value:.6e}"
    text = str(value)
    return f'"{text}"' if (not text or any(c.isspace() for c in text)) else text


def star_block_lines(name: str, df: pd.DataFrame, header: bool = True) -> list[str]:
    """Lines of one loop block: ``data_`` header and column names (when ``header``), then the rows."""
    lines = []
    if header:
        lines = [f"data_{name}", "", "loop_"] + [f"_{c} #{i + 1}" for i, c in enumerate(df.columns)]
    columns = [df[c].to_numpy() for c in df.columns]
    return lines + [" ".join(format_star_value(col[r]) for col in columns) for r in range(len(df))]


def write_star(path: str | Path, blocks: dict[str, pd.DataFrame], version: int | str | None = 30001) -> None:
    """Write data blocks as a RELION loop-style STAR file, atomically, headed by the version ``star_version``
    read from the input (``# version N``, another version line as it was, or none)."""
    lines = version_line(version)
    for name, df in blocks.items():
        lines += star_block_lines(name, df) + ["", ""]
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines))


def shard_blocks(particle_set: ParticleSet, rows: np.ndarray) -> OrderedDict:
    """The metadata blocks with the particle block replaced by the given rows of the (selected) table.

    Columns the reader added (``pixel_size_A``, ``optics_group`` and optics
    columns merged in) are dropped again, so the file reads like the input.
    """
    original = particle_set.blocks[particle_set.block_name].columns
    blocks = OrderedDict(particle_set.blocks)
    blocks[particle_set.block_name] = particle_set.table.iloc[rows][list(original)].reset_index(drop=True)
    return blocks


def concatenate_star(paths: list, output: str | Path) -> None:
    """Join STAR files that share their blocks (shards of one dataset) into one, streaming shard by shard.

    Every block but the particle block is taken from the first file; the
    particle rows follow in the order of ``paths``. Only one shard is held in
    memory at a time.
    """
    first = read_star(paths[0])
    name = particle_block_name(first, paths[0])
    columns = list(first[name].columns)
    with atomic_path(output) as tmp, open(tmp, "w") as handle:
        handle.write("".join(line + "\n" for line in version_line(star_version(paths[0]))))
        for block, df in first.items():
            if block != name:
                handle.write("\n".join(star_block_lines(block, df)) + "\n\n\n")
        handle.write("\n".join(star_block_lines(name, first[name].iloc[:0])) + "\n")
        for i, path in enumerate(paths):
            blocks = first if i == 0 else read_star(path)
            table = blocks[particle_block_name(blocks, path)]
            if list(table.columns) != columns:
                raise InputError(f"{path}: columns differ from those of {paths[0]}")
            if len(table):
                handle.write("\n".join(star_block_lines(name, table, header=False)) + "\n")
        handle.write("\n")
