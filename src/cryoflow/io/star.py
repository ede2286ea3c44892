"""RELION STAR files: all blocks read, the particle block found, blocks written back with the version line
the input had (``# version 30001`` of RELION 3.1, ``50001`` of RELION 5, a RELION 3.0 file's own or none).

Rows are checked against their loop's column count first (``cryoflow.io.starindex.loop_blocks``), since a
row with a field missing would otherwise shift its columns silently.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pandas as pd
import starfile

from cryoflow.errors import InputError
from cryoflow.io.fileio import atomic_path
from cryoflow.io.starindex import IMAGE_NAME, loop_blocks


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


def format_star_value(value: object) -> str:
    if isinstance(value, float | np.floating):
        number = float(value)
        return f"{number:.6f}" if abs(number) >= 1e-3 or number == 0 else f"{number:.6e}"
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
