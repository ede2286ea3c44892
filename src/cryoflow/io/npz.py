"""Streamed ``.npz`` archives: arrays appended chunk by chunk, the archive written once at the end."""

from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from cryoflow.io.fileio import atomic_path


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
