"""Particle preprocessing at dataset scale: particles/s and peak resident memory, 20 000 vs 200 000 particles.

Makes a synthetic RELION 3.1 dataset once (256 px images in per-micrograph
stacks of ``--per-stack`` particles, 8-bit so that 200 000 particles take
13 GB), then preprocesses the first N particles of the same STAR file in a
fresh process per N: noise spectrum from 1000 particles, Fourier crop to the
training grid, whitening, normalization, written as one float32 stack. Each
process reports its own peak RSS (ru_maxrss), so the numbers are comparable
within this run. The goal: peak RSS under 1.5 GiB and flat in N.

    python bench/particles.py [--sizes 20000 200000] [--box 256] [--train-box 128] [--workdir DIR] [--keep]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from synthetic import PIXEL_SIZE_A, make_dataset  # noqa: E402

from cryoflow.io import particles
from cryoflow.physics import preprocess  # noqa: E402


def run_child(star: Path, n: int, train_box: int, pixel_A: float, out: Path) -> dict:
    """Preprocess the first n particles (in this process) and report time and peak RSS."""
    start = time.perf_counter()
    found = particles.load_particles(star)
    source = particles.ParticleSource(found.table.iloc[:n], star)
    read_s = time.perf_counter() - start
    spectra = preprocess.estimate_noise_spectra(source, train_box, pixel_A, 0.4 * train_box * pixel_A, 1000)
    preprocess.preprocess(source, out, train_box, pixel_A, spectra, chunk=512)
    seconds = time.perf_counter() - start
    out.unlink()
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"n": n, "seconds": seconds, "metadata_s": read_s, "rate": n / seconds, "peak_rss_MiB": peak_mib}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[20000, 200000])
    parser.add_argument("--box", type=int, default=256)
    parser.add_argument("--train-box", type=int, default=128)
    parser.add_argument("--per-stack", type=int, default=1000)
    parser.add_argument("--workdir", type=Path, default=None, help="where the dataset lives (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the dataset for the next run")
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="cryoflow-bench-particles-"))
    pixel_A = PIXEL_SIZE_A * args.box / args.train_box
    if args.child is not None:
        print(
            json.dumps(
                run_child(
                    workdir / "particles.star", args.child, args.train_box, pixel_A, workdir / f"out_{args.child}.mrcs"
                )
            )
        )
        return
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"dataset: {max(args.sizes)} particles of {args.box} px (int8) in {workdir}")
    star = make_dataset(workdir, max(args.sizes), args.box, args.per_stack)
    rows = []
    for n in args.sizes:
        cmd = [
            sys.executable,
            __file__,
            "--child",
            str(n),
            "--workdir",
            str(workdir),
            "--box",
            str(args.box),
            "--train-box",
            str(args.train_box),
        ]
        result = subprocess.run(cmd, capture_output=True, text=True, check=True)
        rows.append(json.loads(result.stdout.strip().splitlines()[-1]))
        print(f"  {n} particles done in {rows[-1]['seconds']:.0f} s", flush=True)
    print()
    print(
        f"preprocessing {args.box} px → {args.train_box} px at {pixel_A:g} Å (noise spectrum from 1000, whiten, "
        f"normalize, chunk 512), one process per size, {star.name}"
    )
    print(f"{'particles':>10} {'total s':>8} {'metadata s':>11} {'particles/s':>12} {'peak RSS MiB':>13}")
    for row in rows:
        print(
            f"{row['n']:>10} {row['seconds']:>8.1f} {row['metadata_s']:>11.1f} {row['rate']:>12.0f} "
            f"{row['peak_rss_MiB']:>13.0f}"
        )
    if len(rows) > 1:
        ratio = rows[-1]["peak_rss_MiB"] / rows[0]["peak_rss_MiB"]
        print(f"peak RSS ratio {rows[-1]['n']} / {rows[0]['n']} particles: {ratio:.3f}")
    if not args.keep and args.workdir is None:
        shutil.rmtree(workdir)


if __name__ == "__main__":
    main()
