"""An MRC file's header read with the standard library alone: the DAG's checks of a stack's box and length
before any job runs (the jobs read stacks with ``mrcstack``)."""

from __future__ import annotations

import struct
from pathlib import Path

# bytes per value of the MRC modes: int8, int16, float32, uint16, float16
MRC_MODE_BYTES = {0: 1, 1: 2, 2: 4, 6: 2, 12: 2}


def mrc_header(path: str | Path) -> tuple[int, int, int, int, int] | None:
    """(nx, ny, nz, mode, extended-header bytes) of an MRC file, None where the header is not understood
    here; the machine stamp aside, the sizes read sensibly in one byte order."""
    with open(path, "rb") as handle:
        header = handle.read(1024)
    if len(header) < 1024:
        return None
    for order in "<>":
        nx, ny, nz, mode = struct.unpack(order + "4i", header[:16])
        extended = struct.unpack(order + "i", header[92:96])[0]
        if mode in MRC_MODE_BYTES and min(nx, ny, nz) > 0 and extended >= 0:
            return nx, ny, nz, mode, extended
    return None


def mrc_truncation(path: str | Path) -> str | None:
    """Why an MRC file is shorter than its header says (None when it is whole or the header is not
    understood here): a truncated copy is refused when the DAG is built, not by the job that reads it."""
    path = Path(path)
    size = path.stat().st_size
    if size < 1024:
        return f"{path}: {size} bytes, shorter than an MRC header (1 024)"
    header = mrc_header(path)
    if header is None:
        return None
    nx, ny, nz, mode, extended = header
    expected = 1024 + extended + nx * ny * nz * MRC_MODE_BYTES[mode]
    if size < expected:
        return f"{path}: {size} bytes, but its header ({nx} × {ny} × {nz}, mode {mode}) needs {expected}: truncated"
    return None
