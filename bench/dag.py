"""DAG build time for a dataset whose STAR file names many stacks (every stack an input of its jobs).

    python bench/dag.py [--stacks 10000] [--per-stack 10] [--shards 8]

Writes a RELION 3.1 STAR file naming N one-image-per-particle stacks (tiny MRC files), then times
in one run: indexing the STAR file as the Snakefile does, and `snakemake -n` planning the whole
workflow (the tiny model and that dataset). The goal: under 10 s for 10 000 stacks.
"""

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import mrcfile
import numpy as np
import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from cryoflow.io import starindex  # noqa: E402
from cryoflow.io.star import write_star  # noqa: E402


def make_dataset(folder: Path, n_stacks: int, per_stack: int) -> Path:
    job = folder / "Extract" / "job001"
    (job / "Stacks").mkdir(parents=True)
    template = np.zeros((per_stack, 16, 16), np.float32)
    with mrcfile.new(job / "Stacks" / "s0.mrcs") as mrc:
        mrc.set_data(template)
        mrc.set_image_stack()
    data = (job / "Stacks" / "s0.mrcs").read_bytes()
    names = []
    for k in range(n_stacks):
        if k:
            (job / "Stacks" / f"s{k}.mrcs").write_bytes(data)
        names += [f"{i + 1:06d}@Extract/job001/Stacks/s{k}.mrcs" for i in range(per_stack)]
    n = len(names)
    optics = pd.DataFrame(
        {
            "rlnOpticsGroup": [1],
            "rlnImagePixelSize": [2.0],
            "rlnImageSize": [16],
            "rlnVoltage": [300.0],
            "rlnSphericalAberration": [2.7],
            "rlnAmplitudeContrast": [0.1],
        }
    )
    table = pd.DataFrame(
        {
            "rlnImageName": names,
            "rlnOpticsGroup": np.ones(n, int),
            "rlnDefocusU": np.full(n, 15000.0),
            "rlnDefocusV": np.full(n, 15000.0),
        }
    )
    write_star(job / "particles.star", {"optics": optics, "particles": table})
    return job / "particles.star"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stacks", type=int, default=10_000)
    parser.add_argument("--per-stack", type=int, default=10)
    parser.add_argument("--shards", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        start = time.perf_counter()
        star = make_dataset(tmp / "relion", args.stacks, args.per_stack)
        made = time.perf_counter() - start
        start = time.perf_counter()
        index = starindex.index_star(star)
        paths = [starindex.resolve_stack_path(s, star) for s in index.stacks()]
        indexed = time.perf_counter() - start
        cfg = yaml.safe_load((ROOT / "tests" / "config" / "tiny.yaml").read_text())
        cfg["structure"]["source"] = str(ROOT / cfg["structure"]["source"])
        cfg["datasets"] = {"big": {"star": str(star), "shards": args.shards}}
        (tmp / "config.yaml").write_text(yaml.safe_dump(cfg))
        cmd = [
            sys.executable,
            "-m",
            "snakemake",
            "-s",
            str(ROOT / "Snakefile"),
            "--directory",
            str(tmp),
            "--configfile",
            str(tmp / "config.yaml"),
            "-n",
            "--cores",
            "1",
            "--quiet",
            "all",
        ]
        start = time.perf_counter()
        result = subprocess.run(cmd, capture_output=True, text=True)
        planned = time.perf_counter() - start
        if result.returncode != 0:
            sys.exit(result.stderr[-3000:])
    print(f"{len(index)} particles in {len(paths)} stacks, {args.shards} shards (dataset written in {made:.1f} s)")
    print("| step | seconds |")
    print("|---|---|")
    print(f"| index the STAR file and resolve every stack (cryoflow.io.starindex) | {indexed:.2f} |")
    print(f"| `snakemake -n` of the whole workflow (start-up, config check, DAG) | {planned:.2f} |")


if __name__ == "__main__":
    main()
