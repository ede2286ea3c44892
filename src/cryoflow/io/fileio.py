"""Small file helpers shared by every stage: atomic writes, JSON, tables, ``.npz`` archives, checksums.

Standard library only at import, so the DAG side can use them too (``write_npz`` imports numpy when called)."""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def current_umask() -> int:
    """The process's umask (read by setting it and setting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path next to ``path``; rename onto it only on success.

    A crash, an exception or a killed job leaves no half-written file under the
    final name (the temporary file is removed on exceptions).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part" + path.suffix, dir=path.parent)
    os.fchmod(fd, 0o666 & ~current_umask())  # mkstemp makes 0600; a plain open() obeys the umask
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Write ``data`` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    """The JSON value in ``path`` (the file closed again)."""
    return json.loads(Path(path).read_text())


def write_npz(path: str | os.PathLike, **arrays: Any) -> None:
    """Write ``arrays`` as an uncompressed ``.npz``, atomically."""
    import numpy as np  # here, not at import: the DAG side reads this module without numpy

    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, **arrays)


def write_tsv(
    path: str | os.PathLike, rows: Sequence[Mapping[str, Any]], fieldnames: Sequence[str] | None = None
) -> None:
    """Write ``rows`` (dicts with the same keys) as a tab-separated table with a header, atomically."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(fieldnames or rows[0]), delimiter="\t")
        writer.writeheader()
        writer.writerows(rows)


def sha256_files(paths: str | os.PathLike | list) -> str:
    """SHA-256 over the contents of one file or of a list of files, in order."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()
