"""The MMD permutation test: permutations scored one at a time vs in blocks by one matrix product each.

Both score the same kernel matrix (Gaussian, median-heuristic bandwidth) with the same seeded
permutations. The one-at-a-time form permutes the kernel matrix and sums its blocks for each
permutation (what ``diagnostics.mmd_test`` did before); the block form is ``diagnostics.mmd_test``.
The table checks that both give the same MMD² and p-value, and gives the time of each in this run.
Sizes: the posterior-predictive check (1 000 particles vs 1 000 predictive images, 1 000
permutations) and the report's prior-predictive test (2 000 vs 2 000, 500 permutations), 256-d latents.

    python bench/mmd.py [--sizes 1000:1000 2000:500] [--dim 256] [--repeats 1]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from cryoflow.analysis import diagnostics  # noqa: E402


def mmd_test_one_at_a_time(x: np.ndarray, y: np.ndarray, n_permutations: int, seed: int) -> dict:
    """The reference, as ``diagnostics.mmd_test`` was: per permutation, the permuted kernel matrix and the
    unbiased MMD² from its blocks (diagonals left out)."""
    rng = np.random.default_rng(seed)
    pooled = np.concatenate([x, y]).astype(np.float64)
    bandwidth = diagnostics.median_heuristic(pooled)
    k = np.exp(-diagnostics.squared_distances(pooled, pooled) / bandwidth)
    n, m = len(x), len(y)

    def mmd2(kernel: np.ndarray) -> float:
        kxx, kyy, kxy = kernel[:n, :n], kernel[n:, n:], kernel[:n, n:]
        within_x = (kxx.sum() - np.trace(kxx)) / (n * (n - 1))
        within_y = (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
        return float(within_x + within_y - 2.0 * kxy.mean())

    observed = mmd2(k)
    exceed = 0
    for _ in range(n_permutations):
        order = rng.permutation(n + m)
        exceed += mmd2(k[np.ix_(order, order)]) >= observed - 1e-12 * abs(observed)
    return {"mmd2": observed, "pvalue": (exceed + 1) / (n_permutations + 1)}


def timed(repeats: int, fn, *args, **kwargs):
    best, result = np.inf, None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn(*args, **kwargs)
        best = min(best, time.perf_counter() - start)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["1000:1000", "2000:500"], help="points per sample:permutations")
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    rows = []
    for size in args.sizes:
        n, n_permutations = (int(v) for v in size.split(":"))
        x = rng.normal(size=(n, args.dim))
        y = rng.normal(size=(n, args.dim)) + 0.02  # a small shift: p-values away from both ends
        slow_s, slow = timed(args.repeats, mmd_test_one_at_a_time, x, y, n_permutations, args.seed)
        fast_s, fast = timed(args.repeats, diagnostics.mmd_test, x, y, n_permutations, args.seed, max_points=n)
        same = np.isclose(slow["mmd2"], fast["mmd2"], rtol=1e-9) and slow["pvalue"] == fast["pvalue"]
        rows.append((n, n_permutations, slow_s, fast_s, slow_s / fast_s, fast["mmd2"], fast["pvalue"], same))
    print("| points per sample | permutations | one at a time (s) | blocks of 64 (s) | speed-up | MMD² | p | same |")
    print("|---:|---:|---:|---:|---:|---:|---:|:---:|")
    for n, p, slow_s, fast_s, ratio, mmd2, pvalue, same in rows:
        cells = [n, p, f"{slow_s:.2f}", f"{fast_s:.2f}", f"{ratio:.1f}×", f"{mmd2:.5f}", f"{pvalue:.3f}"]
        cells.append("yes" if same else "NO")
        print("| " + " | ".join(str(c) for c in cells) + " |")
    if not all(row[-1] for row in rows):
        sys.exit("the two forms disagree")


if __name__ == "__main__":
    main()
