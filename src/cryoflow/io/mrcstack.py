"""MRC particle stacks: headers read leniently and checked against the file's length, images streamed.

Stacks are opened leniently (no ``MAP `` stamp, volume space group, voxel size 0, extended headers):
the header gives mode, shape and data offset. The file's length must agree with them.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import mrcfile
import numpy as np

from cryoflow.chunks import chunks
from cryoflow.errors import InputError

log = logging.getLogger(__name__)
# MRC modes a particle stack may use, as their numpy types (little-endian as written by RELION and cryoSPARC)
MRC_MODES = {0: "i1", 1: "<i2", 2: "<f4", 6: "<u2", 12: "<f2"}


@dataclass(frozen=True)
class StackHeader:
    """Where the images of an MRC stack lie: data offset, dtype and the shape the file really holds."""

    path: Path
    offset: int
    dtype: np.dtype
    n_images: int
    box: int
    pixel_size_A: float


def _lenient_header(path: Path):
    """(header, extended-header bytes, data dtype) of an MRC file read leniently; warnings go to the debug log."""
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
    return header, extended, dtype


def _check_length(path: Path, offset: int, mode: int, dtype: np.dtype, shape: tuple[int, int, int]) -> None:
    """Refuse a file shorter than its header says, or exactly as long as another mode would make it; warn of
    any other surplus."""
    nx, ny, nz = shape
    expected = offset + nx * ny * nz * dtype.itemsize
    size = path.stat().st_size
    described = f"mode {mode} ({dtype.name}), {nx} × {ny} × {nz}, {offset - 1024}-byte extended header"
    if size < expected:
        raise InputError(
            f"{path}: the file has {size} bytes but its header ({described}) needs {expected}: truncated, "
            "or the header's mode or nz is wrong"
        )
    if size == expected:
        return
    for other, other_dtype in MRC_MODES.items():
        if other != mode and offset + nx * ny * nz * np.dtype(other_dtype).itemsize == size:
            raise InputError(
                f"{path}: header mode {mode} ({dtype.name}) but the file's {size} bytes are exactly "
                f"{nx} × {ny} × {nz} values of mode {other} ({np.dtype(other_dtype).name}): the header's "
                "mode word is wrong"
            )
    log.warning(
        "%s: the file has %d bytes, %d more than its header (%s) needs (%d); reading the %d images "
        "the header describes",
        path,
        size,
        size - expected,
        described,
        expected,
        nz,
    )


def read_stack_header(path: Path) -> StackHeader:
    """Parse an MRC header leniently and check it against the file's size.

    Missing ``MAP `` stamps, volume space groups (ispg=1), voxel size 0 and
    extended headers are accepted. The file must be as long as header +
    extended header + nx·ny·nz values of the header's mode: shorter stops;
    exactly the length of another mode stops (the mode word is wrong); any
    other surplus is read past with a warning naming both sizes.
    """
    header, extended, dtype = _lenient_header(path)
    nx, ny, nz = int(header.nx), int(header.ny), int(header.nz)
    if nx <= 0 or ny <= 0 or nz <= 0:
        raise InputError(f"{path}: unreadable MRC header (nx, ny, nz = {nx}, {ny}, {nz})")
    if nx != ny:
        raise InputError(f"{path}: images are {ny} × {nx} pixels; square particle images are needed")
    offset = 1024 + extended
    _check_length(path, offset, int(header.mode), dtype, (nx, ny, nz))
    if int(header.ispg) == 1 and nz == nx and nz > 1:
        log.warning(
            "%s: looks like a 3-D volume (space group 1, nz = nx = %d), not a particle stack; "
            "its sections are read as %d images",
            path,
            nx,
            nz,
        )
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
        for part in chunks(header.n_images, batch_size):
            count = part.stop - part.start
            data = np.fromfile(handle, dtype=header.dtype, count=count * per_image)
            yield data.reshape(count, header.box, header.box).astype(np.float32, copy=False)


def gathered_images(stack_paths: list, shard_particles, indices) -> np.ndarray:
    """Images at dataset-wide ``indices`` from the per-shard preprocessed stacks (shards in order)."""
    offsets = np.concatenate([[0], np.cumsum(shard_particles)])
    images = []
    for i in indices:
        shard = int(np.searchsorted(offsets, i, side="right") - 1)
        with mrcfile.mmap(stack_paths[shard], mode="r", permissive=True) as mrc:
            images.append(np.array(mrc.data[i - offsets[shard]], dtype=np.float32))
    return np.stack(images)
