"""Normal modes of large assemblies: time and peak memory of the ANM vs the number of CA, dense vs sparse.

Assemblies are made of copies of adenylate kinase (1AKE chain A, 214 CA)
packed on a 42 Å grid with seeded random orientations, so that copies touch
within the 15 Å cutoff; 19 copies give 4 066 CA, about the 4 080 CA of 24-mer
apoferritin. Each size runs in a fresh process that reports its own peak RSS.
A second table times building the sparse ANM Hessian alone, ProDy's
``ANM.buildHessian`` against ``templates.anm_hessian``, on the same
assemblies and on apoferritin itself (4V1W, 4 080 CA), in this process.

    python bench/templates.py [--copies 1 5 19] [--dense-max-ca 1100]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from cryoflow.ensemble import templates  # noqa: E402
from cryoflow.io import structure  # noqa: E402


def assembly(n_copies: int, seed: int = 0) -> np.ndarray:
    """CA coordinates (n_copies × 214, 3) of packed, randomly oriented copies of 1AKE chain A."""
    ca = structure.load_structure(ROOT / "tests" / "data" / "1ake_chainA.pdb").select("name CA").getCoords()
    ca = ca - ca.mean(axis=0)
    rng = np.random.default_rng(seed)
    cells = [(i, j, k) for i in range(3) for j in range(3) for k in range(3)][:n_copies]
    copies = []
    for cell in cells:
        q = rng.normal(size=4)
        w, x, y, z = q / np.linalg.norm(q)
        rotation = np.array(
            [
                [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
            ]
        )
        copies.append(ca @ rotation.T + 42.0 * np.array(cell))
    return np.concatenate(copies)


def child(n_copies: int, dense: bool) -> None:
    coords = assembly(n_copies)
    templates.SPARSE_FROM_CA = 10**9 if dense else 0
    start = time.perf_counter()
    templates.anm_modes(coords, 2, 15.0, 1.0)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"ca": len(coords), "seconds": seconds, "peak_rss_MiB": peak}))


def hessian_table(sizes: list[int]) -> None:
    """Seconds to build the sparse Hessian, ProDy vs cryoflow, and the largest difference of their entries."""
    import prody

    prody.confProDy(verbosity="none")
    apoferritin = structure.load_structure(ROOT / "resources" / "structures" / "4v1w.cif").select("name CA")
    cases = [(f"{n * 214} CA ({n} ADK)", assembly(n)) for n in sizes]
    cases.append(("4080 CA (4V1W)", apoferritin.getCoords().astype(np.float64)))
    print("\nsparse ANM Hessian, cutoff 15 Å, built in this process")
    print(f"{'structure':>18} {'ProDy s':>8} {'cryoflow s':>11} {'speed-up':>9} {'max |difference|':>17}")
    for name, coords in cases:
        start = time.perf_counter()
        anm = prody.ANM("bench")
        anm.buildHessian(coords, cutoff=15.0, gamma=1.0, sparse=True)
        prody_s = time.perf_counter() - start
        start = time.perf_counter()
        ours = templates.anm_hessian(coords, 15.0, 1.0)
        ours_s = time.perf_counter() - start
        difference = abs(ours - anm.getHessian()).max()
        print(f"{name:>18} {prody_s:>8.2f} {ours_s:>11.3f} {prody_s / ours_s:>8.0f}× {difference:>17.1e}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--copies", type=int, nargs="+", default=[1, 5, 19])
    parser.add_argument("--dense-max-ca", type=int, default=1100, help="skip the dense solver above this")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(int(args.child[0]), args.child[1] == "dense")
        return
    print("ANM, 2 lowest non-trivial modes, cutoff 15 Å; one fresh process per row")
    print(f"{'CA':>6} {'solver':>7} {'seconds':>8} {'peak RSS MiB':>13}")
    for copies in args.copies:
        for solver in ("dense", "sparse"):
            if solver == "dense" and copies * 214 > args.dense_max_ca:
                print(f"{copies * 214:>6} {solver:>7} {'skipped':>8}")
                continue
            cmd = [sys.executable, __file__, "--child", str(copies), solver]
            row = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.splitlines()[-1])
            print(f"{row['ca']:>6} {solver:>7} {row['seconds']:>8.1f} {row['peak_rss_MiB']:>13.0f}", flush=True)
    hessian_table(args.copies)


if __name__ == "__main__":
    main()
