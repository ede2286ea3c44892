"""Small file helpers shared by every stage: atomic writes, JSON, streamed npz archives."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from cryoflow.errors import InputError  # noqa: F401  (re-exported: stages import it from here)


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


def write_json(path: str | os.PathLike, data) -> None:
    """Write ``data`` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


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


class NpzWriter:
    """Build an ``.npz`` archive batch by batch in constant memory.

    ``append`` adds rows along axis 0 to each named array (kept in raw
    temporary files next to ``path``); ``close`` streams them into the
    archive with their final shapes, adds the ``constants`` whole, and
    renames it onto ``path``. An exception inside ``with`` leaves neither the
    archive nor the temporary files.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.folder = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.", dir=self.path.parent))
        self.arrays: dict[str, dict] = {}

    def append(self, **arrays) -> None:
        for key, value in arrays.items():
            value = np.ascontiguousarray(value)
            entry = self.arrays.get(key)
            if entry is None:
                entry = self.arrays[key] = {
                    "dtype": value.dtype,
                    "tail": value.shape[1:],
                    "rows": 0,
                    "file": open(self.folder / f"{len(self.arrays)}.raw", "wb"),
                }
            if value.shape[1:] != entry["tail"]:
                raise ValueError(f"{self.path}: {key} rows of shape {value.shape[1:]}, earlier {entry['tail']}")
            if not np.can_cast(value.dtype, entry["dtype"], casting="same_kind") or (
                value.dtype.kind in "US" and value.dtype.itemsize > entry["dtype"].itemsize
            ):
                raise ValueError(f"{self.path}: {key} rows of dtype {value.dtype} do not fit {entry['dtype']}")
            entry["file"].write(value.astype(entry["dtype"], copy=False).tobytes())
            entry["rows"] += len(value)

    def close(self, **constants) -> None:
        with atomic_path(self.path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED, allowZip64=True) as out:
            for key, entry in self.arrays.items():
                entry["file"].close()
                shape = (entry["rows"], *entry["tail"])
                header = {"descr": np.lib.format.dtype_to_descr(entry["dtype"]), "fortran_order": False, "shape": shape}
                with out.open(key + ".npy", "w", force_zip64=True) as dst, open(entry["file"].name, "rb") as src:
                    np.lib.format.write_array_header_2_0(dst, header)
                    shutil.copyfileobj(src, dst, 1 << 24)
            for key, value in constants.items():
                with out.open(key + ".npy", "w", force_zip64=True) as dst:
                    np.lib.format.write_array(dst, np.asarray(value), allow_pickle=False)
        self.abort()

    def abort(self) -> None:
        for entry in self.arrays.values():
            entry["file"].close()
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, kind, error, traceback):
        if kind is not None:
            self.abort()
