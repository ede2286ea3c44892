"""Synthetic RELION datasets for the benchmarks: per-micrograph 8-bit stacks and a 3.1 STAR file."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

from cryoflow.io.star import read_star, write_star
from cryoflow.physics import preprocess

PIXEL_SIZE_A = 1.0


def make_dataset(folder: Path, n: int, box: int, per_stack: int, seed: int = 0) -> Path:
    """``folder``/particles.star and ``folder``/Extract/job001/Movies/mic_*.mrcs with n particles."""
    star = folder / "particles.star"
    if star.is_file() and len(read_star(star)["particles"]) >= n:
        return star
    stacks = folder / "Extract" / "job001" / "Movies"
    stacks.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    names = []
    start = time.perf_counter()
    for k, first in enumerate(range(0, n, per_stack)):
        count = min(per_stack, n - first)
        path = stacks / f"mic_{k:05d}.mrcs"
        writer = preprocess.StackWriter(path, count, box, PIXEL_SIZE_A, dtype=np.int8)
        writer.write(rng.integers(-60, 60, size=(count, box, box), dtype=np.int8))
        writer.close()
        names += [f"{i + 1:06d}@Extract/job001/Movies/{path.name}" for i in range(count)]
        if k % 50 == 0:
            print(f"  writing stacks: {first + count}/{n} particles, {time.perf_counter() - start:.0f} s", flush=True)
    optics = pd.DataFrame(
        {
            "rlnOpticsGroup": [1],
            "rlnOpticsGroupName": ["opticsGroup1"],
            "rlnImagePixelSize": [PIXEL_SIZE_A],
            "rlnImageSize": [box],
            "rlnVoltage": [300.0],
            "rlnSphericalAberration": [2.7],
            "rlnAmplitudeContrast": [0.1],
        }
    )
    table = pd.DataFrame({"rlnImageName": names, "rlnOpticsGroup": 1, "rlnDefocusU": 15000.0, "rlnDefocusV": 14500.0})
    write_star(star, {"optics": optics, "particles": table})
    return star
