"""Inference end to end at the paper's sizes: cryoflow vs the upstream way, and peak memory vs dataset size.

Both paths start from the same synthetic RELION dataset (128 px stacks on
the training grid), use the same estimator (ResNet-18 embedding, 256-d
latent, NSF with 5 transforms and the paper's hidden layers; random weights:
speed does not depend on them) and produce per-particle posterior summaries
and latent vectors on disk:

* cryoflow: the workflow's own steps: noise spectrum, whitened and
  normalized shard stack written in chunks, then one embedding pass per
  batch giving the latent and the exact posterior density on a 512-point θ
  grid (summaries, 200 inverse-CDF samples), streamed to an npz + STAR file;
* upstream: every image read into memory and whitened and normalized the
  same way, then ``sample_posterior`` (embedding + 1000 flow samples per
  image) and ``compute_latent_repr`` (the embedding again), summaries from
  the samples, results saved with ``torch.save``. "upstream, samples only"
  is the same without the latent pass.

Prints particles/s for each and the ratios, then (``--rss-sizes``) peak RSS
of the cryoflow path in a fresh process per dataset size.

    python bench/inference.py [--n 2000] [--rss-sizes 20000 200000] [--threads 2] [--batch 256] [--repeats 2]
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

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from synthetic import PIXEL_SIZE_A, make_dataset  # noqa: E402

from cryoflow.io import particles
from cryoflow.io.mrcstack import iter_stack
from cryoflow.io.npz import NpzWriter  # noqa: E402
from cryoflow.io.star import write_star
from cryoflow.physics import (
    preprocess,  # noqa: E402
    whitening,
)
from cryoflow.sbi import inference
from cryoflow.sbi.models import PosteriorEstimator  # noqa: E402

PAPER_HIDDEN = (256,) * 10 + (128, 64)
THETA_RANGE_A = (-10.0, 10.0)


def paper_model(seed: int = 0) -> PosteriorEstimator:
    torch.manual_seed(seed)
    return PosteriorEstimator(THETA_RANGE_A, latent_dim=256, width=64, transforms=5, hidden_features=PAPER_HIDDEN)


def cryoflow_path(star: Path, n: int, box: int, batch: int, out: Path) -> None:
    """particle_noise + particles + infer, as the workflow runs them, for the first n particles."""
    found = particles.load_particles(star)
    source = particles.ParticleSource(found.table.iloc[:n], star)
    spectra = preprocess.estimate_noise_spectra(source, box, PIXEL_SIZE_A, 0.4 * box * PIXEL_SIZE_A, 1000)
    preprocess.preprocess(source, out / "shard.mrcs", box, PIXEL_SIZE_A, spectra, chunk=512)
    model = paper_model()
    columns = {key: [] for key in inference.STAR_COLUMNS.values()}
    with NpzWriter(out / "shard.npz") as writer:
        batches = iter_stack(out / "shard.mrcs", batch)
        stream = inference.posterior_stream(model, batches, n, 512, 200, label="bench")
        for summary in stream:
            summary["latent"] = summary["latent"].astype(np.float16)
            writer.append(**summary)
            for key in columns:
                columns[key].append(summary[key])
        writer.close(theta_grid_range_A=np.array(THETA_RANGE_A))
    table = found.table.iloc[:n][list(found.blocks["particles"].columns)].reset_index(drop=True)
    for column, key in inference.STAR_COLUMNS.items():
        table[column] = np.concatenate(columns[key])
    write_star(out / "shard.star", {"optics": found.blocks["optics"], "particles": table})


@torch.no_grad()
def upstream_path(star: Path, n: int, box: int, batch: int, out: Path, latents: bool = True) -> None:
    """Images in memory, then posterior samples (embedding + 1000 samples) and latents (embedding again)."""
    found = particles.load_particles(star)
    source = particles.ParticleSource(found.table.iloc[:n], star)
    images = source.read(np.arange(n))  # the whole dataset in memory
    noise = whitening.estimate_noise_power(images[:1000], 0.4 * box)
    images = whitening.normalize(whitening.whiten(images, noise))
    model = paper_model().eval()
    tensor = torch.from_numpy(images)
    samples = []
    for part in torch.split(tensor, batch):
        u = model.npe.flow(model.embedding(part)).sample((1000,))[..., 0]
        samples.append((u * model.theta_scale + model.theta_center).T)
    samples = torch.cat(samples)
    summary = {"mean": samples.mean(1), "std": samples.std(1)}
    for q in (0.05, 0.5, 0.95):
        summary[f"q{int(q * 100):02d}"] = torch.quantile(samples, q, dim=1)
    torch.save({"samples": samples, **summary}, out / "upstream_samples.pt")
    if latents:
        latent = torch.cat([model.embedding(part) for part in torch.split(tensor, batch)])
        torch.save(latent, out / "upstream_latents.pt")


def timed(fn, *args, **kwargs) -> float:
    start = time.perf_counter()
    fn(*args, **kwargs)
    return time.perf_counter() - start


def child(args) -> None:
    """One cryoflow run in this fresh process: seconds and own peak RSS as JSON."""
    out = Path(tempfile.mkdtemp(dir=args.workdir))
    seconds = timed(cryoflow_path, args.workdir / "particles.star", args.child, args.box, args.batch, out)
    shutil.rmtree(out)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"n": args.child, "seconds": seconds, "peak_rss_MiB": peak}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2000, help="particles for the throughput comparison")
    parser.add_argument("--rss-sizes", type=int, nargs="*", default=[20000, 200000])
    parser.add_argument("--box", type=int, default=128)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per path (best is kept)")
    parser.add_argument("--workdir", type=Path, default=None, help="where the dataset lives (default: a temp dir)")
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.child is not None:
        child(args)
        return
    keep = args.workdir is not None
    args.workdir = args.workdir or Path(tempfile.mkdtemp(prefix="cryoflow-bench-inference-"))
    args.workdir.mkdir(parents=True, exist_ok=True)
    star = make_dataset(args.workdir, max([args.n, *args.rss_sizes]), args.box, 1000)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(
        f"torch {torch.__version__} on {device}, {args.threads} threads, {args.box} px, batch {args.batch}, "
        f"ResNet-18 (width 64, 256-d latent) + NSF (5 transforms, hidden {len(PAPER_HIDDEN)} layers)"
    )
    out = Path(tempfile.mkdtemp(dir=args.workdir))
    timed(cryoflow_path, star, min(args.n, 256), args.box, args.batch, out)  # warm-up: allocator, threads
    paths = {
        "cryoflow (latent + grid posterior, one pass)": (cryoflow_path, {}),
        "upstream (1000 samples + latents)": (upstream_path, {}),
        "upstream, samples only": (upstream_path, {"latents": False}),
    }
    best = {name: float("inf") for name in paths}
    for _ in range(args.repeats):  # interleaved, best of each: the fairest figure on a shared machine
        for name, (fn, options) in paths.items():
            best[name] = min(best[name], timed(fn, star, args.n, args.box, args.batch, out, **options))
    rows = list(best.items())
    shutil.rmtree(out)
    ours = args.n / rows[0][1]
    print(
        f"\n{args.n} particles, end to end (read, preprocess, embed, posterior summaries, write), "
        f"best of {args.repeats}:"
    )
    print(f"{'path':<46} {'seconds':>8} {'particles/s':>12} {'cryoflow ×':>11}")
    for name, seconds in rows:
        rate = args.n / seconds
        print(f"{name:<46} {seconds:>8.1f} {rate:>12.1f} {ours / rate:>11.2f}")
    if args.rss_sizes:
        print(f"\npeak RSS of the cryoflow path, one fresh process per size (batch {args.batch}):")
        print(f"{'particles':>10} {'seconds':>8} {'particles/s':>12} {'peak RSS MiB':>13}")
        results = []
        for n in args.rss_sizes:
            cmd = [
                sys.executable,
                __file__,
                "--child",
                str(n),
                "--workdir",
                str(args.workdir),
                "--box",
                str(args.box),
                "--batch",
                str(args.batch),
                "--threads",
                str(args.threads),
            ]
            done = subprocess.run(cmd, capture_output=True, text=True, check=True)
            results.append(json.loads(done.stdout.strip().splitlines()[-1]))
            r = results[-1]
            print(f"{n:>10} {r['seconds']:>8.1f} {n / r['seconds']:>12.1f} {r['peak_rss_MiB']:>13.0f}", flush=True)
        if len(results) > 1:
            ratio = results[-1]["peak_rss_MiB"] / results[0]["peak_rss_MiB"]
            print(f"peak RSS ratio {results[-1]['n']} / {results[0]['n']} particles: {ratio:.3f}")
    if not keep:
        shutil.rmtree(args.workdir)


if __name__ == "__main__":
    main()
