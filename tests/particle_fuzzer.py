"""A seeded fuzzer for the particle reader: valid RELION STAR, cryoSPARC .cs and MRC stacks, mutated.

Each case mutates one file of a small valid dataset (truncation, header fields, dropped, duplicated
or shuffled fields and rows, line endings, encodings, non-numeric and huge values) and reads it with
cryoflow and with an independent reference (starfile, and mrcfile in strict mode). A case passes when
cryoflow yields exactly the reference's images and pixel sizes, or, where the reference refuses a
file cryoflow reads leniently, the images the file really holds; or stops with an ``InputError``
naming the mutated file. Anything else (another exception, an error naming no file, other pixels)
fails.
"""

from __future__ import annotations

import random
import shutil
import struct
from collections import Counter
from pathlib import Path

import mrcfile
import numpy as np
import pandas as pd
import starfile

from cryoflow.errors import InputError
from cryoflow.io import particles
from cryoflow.io.star import write_star

N_IMAGES, BOX = 6, 12


def partition(labels) -> set:
    """Groups as sets of rows, whatever their labels (two readers may label the same groups differently)."""
    found: dict[str, list[int]] = {}
    for row, label in enumerate(labels):
        found.setdefault(str(label), []).append(row)
    return {tuple(rows) for rows in found.values()}


def make_dataset(folder: Path, seed: int = 0) -> dict:
    """Two float32 stacks of 6 images, a RELION 3.1 STAR file, a RELION 3.0 one and a cryoSPARC export."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    images = {}
    for name in ("a.mrcs", "b.mrcs"):
        images[name] = rng.normal(size=(N_IMAGES, BOX, BOX)).astype(np.float32)
        with mrcfile.new(folder / name, overwrite=True) as mrc:
            mrc.set_data(images[name])
            mrc.set_image_stack()
            mrc.voxel_size = 1.5
    rows = [(i % N_IMAGES + 1, "a.mrcs" if i % 2 else "b.mrcs") for i in range(9)]
    names = [f"{i:06d}@{stack}" for i, stack in rows]
    defocus = rng.uniform(8000, 20000, len(rows)).round(2)
    optics = pd.DataFrame(
        {
            "rlnOpticsGroup": [1],
            "rlnOpticsGroupName": ["opticsGroup1"],
            "rlnVoltage": [300.0],
            "rlnSphericalAberration": [2.7],
            "rlnAmplitudeContrast": [0.1],
            "rlnImagePixelSize": [1.5],
            "rlnImageSize": [BOX],
        }
    )
    table = pd.DataFrame(
        {
            "rlnImageName": names,
            "rlnDefocusU": defocus,
            "rlnDefocusV": defocus - 100.0,
            "rlnDefocusAngle": 30.0,
            "rlnPhaseShift": 0.0,
            "rlnOpticsGroup": 1,
        }
    )
    write_star(folder / "r31.star", {"optics": optics, "particles": table})
    r30 = table.drop(columns="rlnOpticsGroup").assign(
        rlnDetectorPixelSize=7.5,
        rlnMagnification=50000.0,
        rlnVoltage=300.0,
        rlnSphericalAberration=2.7,
        rlnAmplitudeContrast=0.1,
    )
    write_star(folder / "r30.star", {"": r30}, version=None)
    fields = [
        ("uid", "<u8"),
        ("blob/path", "S16"),
        ("blob/idx", "<u4"),
        ("blob/psize_A", "<f4"),
        ("ctf/df1_A", "<f4"),
        ("ctf/df2_A", "<f4"),
    ]
    records = np.zeros(len(rows), dtype=fields)
    records["uid"] = np.arange(len(rows)) + 100
    records["blob/path"] = [f">{stack}".encode() for _, stack in rows]
    records["blob/idx"] = [i - 1 for i, _ in rows]
    records["blob/psize_A"] = 1.5
    records["ctf/df1_A"], records["ctf/df2_A"] = defocus, defocus - 100.0
    with open(folder / "p.cs", "wb") as handle:
        np.save(handle, records)
    return {"folder": folder, "images": images, "rows": rows}


# ------------------------------------------------------------------ mutations
def _lines(text: str) -> list[str]:
    return text.split("\n")


def _data_rows(lines: list[str]) -> list[int]:
    return [i for i, line in enumerate(lines) if "@" in line and not line.startswith("_")]


def mutate_star(text: str, rng: random.Random) -> tuple[str, bytes | None]:
    """(kind, new bytes) for a STAR file's text."""
    lines = _lines(text)
    rows = _data_rows(lines)
    kind = rng.choice(
        [
            "truncate",
            "drop_field",
            "extra_field",
            "swap_rows",
            "duplicate_row",
            "delete_row",
            "crlf",
            "latin1",
            "non_numeric",
            "huge",
            "zero_index",
            "past_end",
            "rename_column",
            "no_loop",
            "empty",
            "blank_lines",
            "tabs",
        ]
    )
    row = rng.choice(rows)
    fields = lines[row].split()
    if kind == "truncate":
        data = text.encode()
        return kind, data[: rng.randrange(len(data))]
    if kind == "drop_field":
        del fields[rng.randrange(len(fields))]
        lines[row] = " ".join(fields)
    elif kind == "extra_field":
        fields.insert(rng.randrange(len(fields) + 1), "7.0")
        lines[row] = " ".join(fields)
    elif kind == "swap_rows":
        other = rng.choice(rows)
        lines[row], lines[other] = lines[other], lines[row]
    elif kind == "duplicate_row":
        lines.insert(row, lines[row])
    elif kind == "delete_row":
        del lines[row]
    elif kind == "crlf":
        return kind, "\r\n".join(lines).encode()
    elif kind == "latin1":
        return kind, text.replace("opticsGroup1", "optiqueGroupé1").encode("latin-1")
    elif kind in ("non_numeric", "huge"):
        column = rng.randrange(1, len(fields))
        fields[column] = "n/a" if kind == "non_numeric" else "1e308"
        lines[row] = " ".join(fields)
    elif kind in ("zero_index", "past_end"):
        index, stack = fields[0].split("@", 1)
        fields[0] = f"{0 if kind == 'zero_index' else N_IMAGES + 3}@{stack}"
        lines[row] = " ".join(fields)
    elif kind == "rename_column":
        column = rng.choice([i for i, line in enumerate(lines) if line.startswith("_rln")])
        lines[column] = "_rlnSomethingElse" + lines[column][lines[column].find(" ") :]
    elif kind == "no_loop":
        lines = [line for line in lines if line.strip() != "loop_"]
    elif kind == "empty":
        return kind, b""
    elif kind == "blank_lines":
        lines.insert(row, "")
    elif kind == "tabs":
        lines[row] = "\t".join(fields)
    return kind, "\n".join(lines).encode()


def mutate_stack(data: bytes, rng: random.Random) -> tuple[str, bytes]:
    kind = rng.choice(
        ["truncate", "append", "mode", "nx", "nz_less", "nz_more", "nsymbt", "stamp", "flip_data", "header_only"]
    )
    data = bytearray(data)
    if kind == "truncate":
        return kind, bytes(data[: rng.randrange(len(data))])
    if kind == "append":
        return kind, bytes(data + bytes(rng.randrange(1, 4000)))
    if kind == "header_only":
        return kind, bytes(data[:1024])
    if kind == "mode":
        struct.pack_into("<i", data, 12, rng.choice([0, 1, 3, 4, 6, 12, 101, -5]))
    elif kind == "nx":
        struct.pack_into("<i", data, 0, rng.choice([0, BOX - 2, BOX + 4, 10**6]))
    elif kind == "nz_less":
        struct.pack_into("<i", data, 8, rng.randrange(1, N_IMAGES))
    elif kind == "nz_more":
        struct.pack_into("<i", data, 8, N_IMAGES + rng.randrange(1, 4))
    elif kind == "nsymbt":
        struct.pack_into("<i", data, 92, rng.choice([4, 128, 1024, -8]))
    elif kind == "stamp":
        data[208:212] = b"XYZ\0"
    elif kind == "flip_data":
        position = rng.randrange(1024, len(data))
        data[position] ^= 0x40
    return kind, bytes(data)


def mutate_cs(data: bytes, rng: random.Random) -> tuple[str, bytes]:
    kind = rng.choice(["truncate", "garbage", "pickle_flag"])
    if kind == "truncate":
        return kind, data[: rng.randrange(len(data))]
    if kind == "garbage":
        return kind, bytes(rng.randrange(256) for _ in range(200))
    return kind, data.replace(b"'descr'", b"'descX'", 1)


# ------------------------------------------------------------------ readers
def read_with_cryoflow(star: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images and pixel sizes as the particle stage reads them."""
    found = particles.load_particles(star)
    source = particles.ParticleSource(found.table, star)
    return source.read(np.arange(len(source))), source.pixel_size_A


def read_reference(star: Path) -> tuple[np.ndarray, np.ndarray]:
    """The same through starfile and strict mrcfile (RELION STAR files only)."""
    blocks = starfile.read(star, always_dict=True)
    table = next(df for df in blocks.values() if isinstance(df, pd.DataFrame) and "rlnImageName" in df)
    optics = blocks.get("optics")
    if optics is not None and "rlnImagePixelSize" in optics:
        pixel = np.full(len(table), float(optics["rlnImagePixelSize"].iloc[0]))
    else:
        pixel = table["rlnDetectorPixelSize"].astype(float).to_numpy() * 1e4 / table["rlnMagnification"].astype(float)
    stacks, out = {}, []
    for name in table["rlnImageName"]:
        index, path = name.split("@", 1)
        if path not in stacks:
            with mrcfile.open(star.parent / path, permissive=False) as mrc:
                stacks[path] = np.array(mrc.data, dtype=np.float32)
        if int(index) < 1:
            raise ValueError("index below 1")
        out.append(stacks[path][int(index) - 1])
    return np.stack(out), np.asarray(pixel, dtype=float)


def truth(folder: Path, names: list[str]) -> np.ndarray:
    """The images the stacks' bytes hold for ``idx@stack`` names, read at the layout they were written with
    (1024-byte header, float32, 6 × 12 × 12): what a lenient reader must return whatever a header says."""
    per_image = BOX * BOX * 4
    out = []
    for name in names:
        index, stack = name.split("@", 1)
        start = 1024 + (int(index) - 1) * per_image
        data = (folder / stack).read_bytes()[start : start + per_image]
        out.append(np.frombuffer(data, dtype="<f4").reshape(BOX, BOX))
    return np.stack(out)


def mutate_case(base: dict, work: Path, seed: int) -> tuple[Path, Path, str]:
    """A copy of the base dataset in ``work`` with one file mutated: (metadata file to read, mutated file,
    mutation)."""
    rng = random.Random(seed)
    if work.exists():
        shutil.rmtree(work)
    shutil.copytree(base["folder"], work)
    star = work / rng.choice(["r31.star", "r30.star", "r31.star", "p.cs"])
    target = rng.choice(["metadata", "metadata", "stack"])
    if target == "stack":
        mutated = work / rng.choice(["a.mrcs", "b.mrcs"])
        kind, data = mutate_stack(mutated.read_bytes(), rng)
    elif star.suffix == ".cs":
        mutated = star
        kind, data = mutate_cs(star.read_bytes(), rng)
    else:
        mutated = star
        kind, data = mutate_star(star.read_text(), rng)
    mutated.write_bytes(data)
    return star, mutated, kind


def run_case(base: dict, work: Path, seed: int) -> tuple[str, str, str, Path]:
    """(mutated file, mutation, outcome, metadata file read) of one fuzz case; AssertionError on a failure."""
    star, mutated, kind = mutate_case(base, work, seed)
    where = f"case {seed}: {mutated.name} {kind}"
    try:
        images, pixel = read_with_cryoflow(star)
    except InputError as err:
        assert mutated.name in str(err) or star.name in str(err), f"{where}: error names no file: {err}"
        return mutated.name, kind, "stopped", star
    except Exception as err:  # anything but InputError is a reader bug
        raise AssertionError(f"{where}: {type(err).__name__}: {err}") from err
    try:
        reference, ref_pixel = read_reference(star) if star.suffix == ".star" else (None, None)
    except Exception:
        reference = None
    if reference is not None:
        assert images.shape == reference.shape and np.array_equal(images, reference), f"{where}: pixels differ"
        np.testing.assert_allclose(pixel, ref_pixel, rtol=1e-6, err_msg=where)
        return mutated.name, kind, "agrees", star
    names = particles.load_particles(star).table["rlnImageName"].tolist()
    assert np.array_equal(images, truth(work, names)), f"{where}: lenient read gave other pixels"
    return mutated.name, kind, "lenient", star


def fuzz(folder: Path, n_cases: int, seed: int) -> Counter:
    """Run ``n_cases`` seeded cases; the count of (target, mutation, outcome)."""
    base = make_dataset(folder / "base")
    outcomes = Counter()
    for case in range(n_cases):
        target, kind, outcome, _ = run_case(base, folder / "case", seed * 100_000 + case)
        outcomes[(target.split(".")[-1], kind, outcome)] += 1
    return outcomes
