"""Micrographs as RELION users have them: a CTF job's micrograph STAR file, or MRC files with one defocus.

A micrograph STAR file (``CtfFind/jobNNN/micrographs_ctf.star``) names each
micrograph (``_rlnMicrographName``) with its defocus (``_rlnDefocusU/V``,
``_rlnDefocusAngle``) and optics group, whose block gives the pixel size
(``_rlnMicrographPixelSize``, else ``_rlnMicrographOriginalPixelSize`` or
``_rlnImagePixelSize``), voltage, Cs and amplitude contrast. Without one, a
glob of MRC files and the set's ``defocus_A``, ``pixel_size_A`` and optics
keys describe them.

Every micrograph is checked before any output is written (``check``): the
file exists, its MRC header parses, the file is as long as the header says,
it is one 2-D image, its pixel size agrees with what the STAR file says
(within 1 %, when the header states one) and it holds at least one window.
Micrographs are then read one at a time (``read``): 4k × 4k float32 is
64 MiB, an 8k K3 micrograph four times that.
"""

from __future__ import annotations

import glob
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from cryoflow.errors import InputError
from cryoflow.io.mrcstack import MRC_MODES
from cryoflow.io.star import read_star
from cryoflow.io.starindex import MICROGRAPH_NAME, OPTICS_GROUP, index_micrographs

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

PIXEL_MISMATCH = 0.01  # a header pixel size more than 1 % from the STAR file's stops
PIXEL_COLUMNS = ("rlnMicrographPixelSize", "rlnMicrographOriginalPixelSize", "rlnImagePixelSize")
OPTICS_COLUMNS = {
    "voltage_kV": "rlnVoltage",
    "cs_mm": "rlnSphericalAberration",
    "amplitude_contrast": "rlnAmplitudeContrast",
}


@dataclass(frozen=True)
class Micrograph:
    """One micrograph: its name as the input wrote it, the file, pixel size and CTF."""

    name: str
    path: Path
    pixel_size_A: float
    defocus_u_A: float
    defocus_v_A: float
    defocus_angle_deg: float
    voltage_kV: float
    cs_mm: float
    amplitude_contrast: float
    phase_shift_deg: float = 0.0
    optics_group: str = "1"

    @property
    def defocus_A(self) -> float:
        return 0.5 * (self.defocus_u_A + self.defocus_v_A)


def _number(value, path, row: int, column: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if not np.isfinite(number):
        raise InputError(f"{path}, micrograph {row + 1}: _{column} {value!r} is not a number")
    return number


def _with_optics(table: pd.DataFrame, optics: pd.DataFrame | None, path) -> pd.DataFrame:
    """The micrograph rows with their optics group's columns (RELION 3.1+), an unknown group refused."""
    if optics is None or OPTICS_GROUP not in optics.columns:
        return table
    if OPTICS_GROUP not in table.columns and len(optics) == 1:
        table = table.assign(**{OPTICS_GROUP: optics[OPTICS_GROUP].iloc[0]})
    if OPTICS_GROUP not in table.columns:
        return table
    unknown = sorted(set(table[OPTICS_GROUP].astype(str)) - set(optics[OPTICS_GROUP].astype(str)))
    if unknown:
        raise InputError(f"{path}: _{OPTICS_GROUP} {unknown[0]} of the micrographs is not in data_optics")
    extra = [c for c in optics.columns if c not in table.columns or c == OPTICS_GROUP]
    return table.astype({OPTICS_GROUP: str}).merge(
        optics[extra].astype({OPTICS_GROUP: str}), on=OPTICS_GROUP, how="left"
    )


def _micrograph(row: dict, i: int, path, resolved: dict, pixel_column: str | None, pixel_size_A) -> Micrograph:
    """Row ``i`` of a micrograph table, each number checked (the file and the row named)."""
    defocus_u = _number(row["rlnDefocusU"], path, i, "rlnDefocusU")
    values = {
        key: _number(row[column], path, i, column) if column in row else default
        for key, column, default in (
            ("defocus_v_A", "rlnDefocusV", defocus_u),
            ("defocus_angle_deg", "rlnDefocusAngle", 0.0),
            ("phase_shift_deg", "rlnPhaseShift", 0.0),
            ("voltage_kV", "rlnVoltage", None),
            ("cs_mm", "rlnSphericalAberration", None),
            ("amplitude_contrast", "rlnAmplitudeContrast", None),
        )
    }
    missing = [OPTICS_COLUMNS[k] for k in OPTICS_COLUMNS if values[k] is None]
    if missing:
        raise InputError(f"{path}, micrograph {i + 1}: no _{missing[0]} (in data_optics or the micrograph row)")
    if pixel_size_A:
        pixel = float(pixel_size_A)
    else:
        assert pixel_column is not None  # from_star refused a table without one
        pixel = _number(row[pixel_column], path, i, pixel_column)
    if pixel <= 0 or defocus_u <= 0:
        field = "pixel size" if pixel <= 0 else "_rlnDefocusU"
        raise InputError(f"{path}, micrograph {i + 1}: {field} must be positive")
    name = str(row[MICROGRAPH_NAME])
    group = str(row.get(OPTICS_GROUP, "1"))
    numbers = {key: float(value) for key, value in values.items() if value is not None}  # none is, after the check
    return Micrograph(
        name=name, path=resolved[name], pixel_size_A=pixel, defocus_u_A=defocus_u, optics_group=group, **numbers
    )


def from_star(path: str | Path, datadir=None, pixel_size_A: float | None = None) -> list[Micrograph]:
    """The micrographs of a RELION micrograph STAR file (3.1 and later with optics groups, or 3.0 without)."""
    resolved = dict(index_micrographs(path, datadir))
    blocks = read_star(path)
    table = next(df for df in blocks.values() if MICROGRAPH_NAME in df.columns)
    table = _with_optics(table, blocks.get("optics"), path)
    if "rlnDefocusU" not in table.columns:
        raise InputError(
            f"{path}: no _rlnDefocusU column: a micrograph STAR file from a CTF job is needed "
            "(CtfFind/jobNNN/micrographs_ctf.star)"
        )
    pixel_column = next((c for c in PIXEL_COLUMNS if c in table.columns), None)
    if pixel_column is None and not pixel_size_A:
        raise InputError(
            f"{path}: no micrograph pixel size (_rlnMicrographPixelSize in data_optics); set the "
            "micrograph set's pixel_size_A"
        )
    rows = table.to_dict("records")
    return [_micrograph(row, i, path, resolved, pixel_column, pixel_size_A) for i, row in enumerate(rows)]


def from_files(pattern: str, defocus_A: float, pixel_size_A: float, optics: dict) -> list[Micrograph]:
    """MRC micrographs matching a glob, all with one defocus, pixel size and optics (``voltage_kV`` …)."""
    files = sorted(glob.glob(pattern))
    if not files:
        raise InputError(f"micrographs: no file matches {pattern!r} (key files)")
    return [
        Micrograph(
            name=f,
            path=Path(f),
            pixel_size_A=float(pixel_size_A),
            defocus_u_A=float(defocus_A),
            defocus_v_A=float(defocus_A),
            defocus_angle_deg=0.0,
            **optics,
        )
        for f in files
    ]


@dataclass(frozen=True)
class MicrographHeader:
    offset: int
    dtype: np.dtype
    shape: tuple[int, int]
    pixel_size_A: float  # 0 when the header states none


def read_header(path: Path) -> MicrographHeader:
    """A micrograph's MRC header, checked against the file: one 2-D image, as many bytes as it says."""
    import mrcfile

    if not path.is_file():
        raise InputError(f"{path}: micrograph not found")
    try:
        with mrcfile.open(path, mode="r", permissive=True, header_only=True) as mrc:
            header = mrc.header.copy()
        dtype = mrcfile.utils.data_dtype_from_header(header)
    except Exception as err:
        raise InputError(f"{path}: unreadable MRC header ({err})") from err
    nx, ny, nz = int(header.nx), int(header.ny), int(header.nz)
    if nx <= 0 or ny <= 0 or nz != 1:
        raise InputError(f"{path}: a micrograph is one 2-D image; the header says nx, ny, nz = {nx}, {ny}, {nz}")
    if int(header.mode) not in MRC_MODES:
        raise InputError(f"{path}: MRC mode {int(header.mode)} is not an image mode")
    offset = 1024 + int(header.nsymbt)
    expected = offset + nx * ny * dtype.itemsize
    size = path.stat().st_size
    if size < expected:
        raise InputError(
            f"{path}: the file has {size} bytes but its header ({nx} × {ny}, mode {int(header.mode)}) "
            f"needs {expected}: truncated"
        )
    mx = int(header.mx) or nx
    pixel = float(header.cella.x) / mx if float(header.cella.x) > 0 else 0.0
    return MicrographHeader(offset, np.dtype(dtype), (ny, nx), pixel)


def check(micrographs: list[Micrograph], min_size_A: float, source: str) -> list[MicrographHeader]:
    """Check every micrograph before any output is written; one error naming the file and the field."""
    headers = []
    for m in micrographs:
        header = read_header(m.path)
        if header.pixel_size_A > 0 and abs(header.pixel_size_A / m.pixel_size_A - 1) > PIXEL_MISMATCH:
            raise InputError(
                f"{m.path}: the MRC header's pixel size {header.pixel_size_A:.4g} Å differs from the "
                f"{m.pixel_size_A:.4g} Å {source} gives it (_rlnMicrographPixelSize or pixel_size_A)"
            )
        height_A, width_A = (n * m.pixel_size_A for n in header.shape)
        if min(height_A, width_A) < min_size_A:
            raise InputError(
                f"{m.path}: {header.shape[1]} × {header.shape[0]} pixels ({width_A:.0f} × "
                f"{height_A:.0f} Å) is smaller than one {min_size_A:.0f} Å window"
            )
        headers.append(header)
    return headers


def read(path: Path, header: MicrographHeader | None = None) -> np.ndarray:
    """One micrograph as float32 (ny, nx), read with a plain file read (no memory map kept open)."""
    header = header or read_header(Path(path))
    with open(path, "rb") as handle:
        handle.seek(header.offset)
        data = np.fromfile(handle, dtype=header.dtype, count=header.shape[0] * header.shape[1])
    return data.reshape(header.shape).astype(np.float32, copy=False)


def open_set(settings: dict, star: str | None, simulator_optics: dict) -> tuple[list[Micrograph], str]:
    """The micrographs of a micrograph set (``star``: its STAR file, the demo's too; else its ``files``),
    and how to name where their pixel size came from in errors."""
    if star is not None:
        return from_star(star, settings["datadir"], settings["pixel_size_A"]), str(star)
    optics = {key: settings[key] if settings[key] is not None else simulator_optics[key] for key in OPTICS_COLUMNS}
    return from_files(settings["files"], settings["defocus_A"], settings["pixel_size_A"], optics), "pixel_size_A"
