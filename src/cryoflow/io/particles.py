"""Experimental particles: RELION STAR or cryoSPARC ``.cs`` metadata and MRC stacks, streamed from disk.

Reading follows RELION: ``_rlnImageName`` is ``idx@path`` with a 1-based
index; pixel sizes come from the optics block (3.1 and 5) or from
``_rlnDetectorPixelSize`` (µm) and ``_rlnMagnification`` (3.0). cryoSPARC
exports are turned into the same RELION-named table (``blob/idx`` is
0-based, ``blob/path`` may start with ``>``). Stack paths stay data: they
are resolved against the file system, never executed.

Images are read through a memory map that lives only for one chunk, so the
resident memory never grows with the dataset. STAR files, cryoSPARC exports
and MRC stack headers have modules of their own (``star``, ``cryosparc``,
``mrcstack``); their functions are importable from here too.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cryoflow.errors import InputError
from cryoflow.io.cryosparc import read_cryosparc
from cryoflow.io.mrcstack import read_stack_header
from cryoflow.io.star import particle_block_name, read_star, star_version
from cryoflow.io.starindex import CTF_COLUMNS as RELION_CTF_COLUMNS
from cryoflow.io.starindex import IMAGE_NAME, OPTICS_GROUP, resolve_stack_path

log = logging.getLogger(__name__)


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


def check_ctf_values(table: pd.DataFrame, path) -> None:
    """Refuse a particle whose CTF (its row's or its optics group's) holds a value that is not a finite
    number, naming the file, the particle and the column, as the DAG's index does (``starindex``)."""
    for column in RELION_CTF_COLUMNS:
        if column not in table:
            continue
        values = pd.to_numeric(table[column], errors="coerce").to_numpy(float)
        bad = np.flatnonzero(~np.isfinite(values))
        if len(bad):
            row = bad[0]
            raw = str(table[column].iloc[row])
            raise InputError(
                f"{path}: particle {table.index[row] + 1} ({table[IMAGE_NAME].iloc[row]}) has _{column} {raw!r}, "
                "not a finite number"
            )


def optics_groups(table: pd.DataFrame) -> np.ndarray:
    """One label per particle: ``_rlnOpticsGroup`` where present, otherwise one group per pixel size."""
    if OPTICS_GROUP in table.columns:
        return table[OPTICS_GROUP].astype(str).to_numpy()
    _, inverse = np.unique(table["pixel_size_A"].to_numpy(), return_inverse=True)
    return (inverse + 1).astype(str)


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
    version: int | str | None  # star.star_version's: written back as it came in


def load_particles(path, pixel_size_A=None, select=None) -> ParticleSet:
    """Read a STAR or ``.cs`` file, resolve pixel sizes and optics groups, apply ``select``."""
    path = Path(path)
    blocks = read_metadata(path)
    table = particle_table(path, blocks, pixel_size_A)
    if table.empty:
        raise InputError(f"{path}: no particle rows in data_{particle_block_name(blocks, path)}")
    table = select_particles(table, select, path)
    check_ctf_values(table, path)
    version = 30001 if path.suffix == ".cs" else star_version(path)
    return ParticleSet(path, blocks, particle_block_name(blocks, path), table, version)


# the simulator's per-image CTF keys and the RELION columns they come from
CTF_COLUMNS = {
    "defocus_u_A": "rlnDefocusU",
    "defocus_v_A": "rlnDefocusV",
    "astigmatism_angle_deg": "rlnDefocusAngle",
    "voltage_kV": "rlnVoltage",
    "cs_mm": "rlnSphericalAberration",
    "amplitude_contrast": "rlnAmplitudeContrast",
    "phase_shift_deg": "rlnPhaseShift",
    "b_factor_A2": "rlnCtfBfactor",
}


def star_ctf(table: pd.DataFrame, rows) -> tuple[dict[str, np.ndarray] | None, list[str]]:
    """Each row's own CTF as the simulator's nuisance keys (arrays), and the RELION columns absent.

    None when the table has no per-particle defocus (``_rlnDefocusU``).
    """
    ctf = {key: table[column].to_numpy(float)[rows] for key, column in CTF_COLUMNS.items() if column in table}
    missing = [column for key, column in CTF_COLUMNS.items() if key not in ctf]
    return (ctf if "defocus_u_A" in ctf else None), missing


def ctf_priors(table: pd.DataFrame, path) -> dict[str, Any]:
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
        # RELION's B-factor multiplies by exp(−B s²/4) with B ≥ 0 for decay, as cryoflow.physics.ctf does
        found["b_factor_range_A2"] = [float(values["rlnCtfBfactor"].min()), float(values["rlnCtfBfactor"].max())]
    keys = np.stack([values["rlnVoltage"], values["rlnSphericalAberration"], values["rlnAmplitudeContrast"]], axis=1)
    groups, counts = np.unique(keys, axis=0, return_counts=True)
    found["optics"] = [
        {"voltage_kV": float(v), "cs_mm": float(cs), "amplitude_contrast": float(ac), "weight": int(c)}
        for (v, cs, ac), c in zip(groups, counts)
    ]
    return found


# ---------------------------------------------------------------- images
def parse_image_name(name: str, path="STAR file", row: int | None = None) -> tuple[int, str]:
    """``'12@Extract/job007/stack.mrcs'`` → (11, 'Extract/job007/stack.mrcs'): 0-based index and path.

    A name without ``@`` is a single-image file (index 0).
    """
    where = f"{path}, particle {row + 1}" if row is not None else str(path)
    if not isinstance(name, str) or not name.strip():
        raise InputError(f"{where}: _{IMAGE_NAME} {name!r} is empty")
    if "@" not in name:
        return 0, name
    number, stack = name.split("@", 1)
    try:
        index = int(number)
    except ValueError as err:
        raise InputError(f"{where}: _{IMAGE_NAME} {name!r} has a non-integer index") from err
    if index < 1:
        raise InputError(f"{where}: _{IMAGE_NAME} {name!r}: indices are 1-based")
    return index - 1, stack


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
                        self.star_path,
                        group,
                        stated,
                        boxes[0],
                    )

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


def shard_blocks(particle_set: ParticleSet, rows: np.ndarray) -> OrderedDict:
    """The metadata blocks with the particle block replaced by the given rows of the (selected) table.

    Columns the reader added (``pixel_size_A``, ``optics_group`` and optics
    columns merged in) are dropped again, so the file reads like the input.
    """
    original = particle_set.blocks[particle_set.block_name].columns
    blocks = OrderedDict(particle_set.blocks)
    blocks[particle_set.block_name] = particle_set.table.iloc[rows][list(original)].reset_index(drop=True)
    return blocks
