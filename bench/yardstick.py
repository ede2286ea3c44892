"""The estimator's yardstick: how far each model's posteriors are from the exact posterior, in seconds.

``make`` draws seeded images per SNR from a finished run's model recipe (its templates, priors and image grid)
and computes their exact log-likelihood per template (both nuisance modes unless ``--modes`` says otherwise;
the grids at the schema's defaults), once; ``--theta-check`` also shows the reference converged in θ
(the likelihood halfway between templates against its interpolation). ``score`` rates trained models on
those images: per SNR the mean excess −log density at the true θ over the exact posterior's (± its
standard error), the median σ ratio, the 68th-percentile error ratio and the median KL divergence. A model
trained for other templates, priors or image grid than the reference's is refused, naming the field.

    python bench/yardstick.py make --results results/demo [--n 100] [--snr 0.01 0.1 1.0] \
        [--modes marginalized ctf_known] [--theta-check 20] [--out bench/reference/demo.npz]
    python bench/yardstick.py score --reference bench/reference/demo.npz --models results/demo/model/posterior.pt …
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from cryoflow.io.fileio import sha256_files, write_json, write_npz  # noqa: E402
from cryoflow.likelihood import comparison, yardstick  # noqa: E402
from cryoflow.sbi import models  # noqa: E402
from cryoflow.workflow import from_config, schema  # noqa: E402


def recipe(results: Path, config_path: Path):
    """The simulator a run's model was trained with, and the checksums a reference records."""
    config = schema.validate(yaml.safe_load(config_path.read_text()))
    ensemble_path = results / "templates" / "ensemble.npz"
    priors = json.loads((results / "model" / "priors.json").read_text())
    simulator = from_config.build_simulator(
        from_config.load_ensemble(ensemble_path), config, from_config.priors_from_dict(priors)
    )
    provenance = {
        "ensemble_sha256": sha256_files(ensemble_path),
        "settings_sha256": yardstick.settings_sha256(
            priors, config["image"]["box_px"], config["image"]["pixel_size_A"]
        ),
    }
    return config, simulator, provenance


def make(args) -> None:
    config, simulator, provenance = recipe(Path(args.results), ROOT / args.config)
    grids = config["validation"]["likelihood"] or schema.likelihood_defaults({})  # the config's, else the defaults
    settings = {mode: comparison.grid_settings(grids, mode) for mode in args.modes}
    start = time.perf_counter()
    ref = yardstick.make_reference(simulator, args.snr, args.n, config["seed"], settings, provenance)
    seconds = time.perf_counter() - start
    print(f"{len(ref['theta_true'])} images × {len(args.modes)} modes: {seconds:.0f} s")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write_npz(args.out, **ref)
    checks = []
    if args.theta_check:
        snr = max(args.snr)
        for mode in args.modes:
            entry = yardstick.theta_convergence(simulator, ref, mode, settings[mode], snr, args.theta_check)
            checks.append({"nuisance": mode, **entry})
            print(json.dumps(checks[-1]))
    write_json(Path(args.out).with_suffix(".json"), {"seconds": seconds, "theta_convergence": checks, **provenance})


def paired(entry: dict, first: dict | None) -> str:
    """The excess against the first model's on the same images, with the paired standard error."""
    if first is None:
        return "—"
    difference = entry["excess_per_image"] - first["excess_per_image"]
    return f"{np.mean(difference):+.3f} ± {np.std(difference, ddof=1) / np.sqrt(len(difference)):.3f}"


def score(args) -> None:
    ref = yardstick.load(args.reference)
    print(
        "| model | steps | nuisance | SNR | n | excess −log p(θ) (nats) | vs the first model | median σ ratio | "
        "68 % error exact / estimator (Å) | ratio | median KL |"
    )
    print("|:---|---:|:---|---:|---:|---:|---:|---:|---:|---:|---:|")
    baseline: list[dict] | None = None
    for path in map(Path, args.models):
        card_path = path.with_name("card.json")
        card = json.loads(card_path.read_text())
        yardstick.check(args.reference, ref, card, card_path)
        model, _ = models.load_model(path, torch.device("cpu"))
        entries = yardstick.score(ref, model, torch.device("cpu"))
        for k, e in enumerate(entries):
            print(
                f"| {path.parent.parent.name} | {card.get('best_step', '?')} | {e['nuisance']} | {e['snr']:g} | "
                f"{e['n']} | {e['excess_nll']:.3f} ± {e['excess_nll_se']:.3f} | "
                f"{paired(e, None if baseline is None else baseline[k])} | {e['median_std_ratio']:.2f} | "
                f"{e['p68_exact_A']:.2f} / {e['p68_estimator_A']:.2f} | {e['p68_ratio']:.2f} | {e['median_kl']:.3f} |"
            )
        baseline = baseline or entries


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    sub = parser.add_subparsers(dest="command", required=True)
    m = sub.add_parser("make", help="images and their exact log-likelihood per template")
    m.add_argument("--results", default="results/demo", help="a finished run's model folder (results/<model>)")
    m.add_argument("--config", default="config/config.yaml", help="the config that run used")
    m.add_argument("--n", type=int, default=100, help="images per SNR")
    m.add_argument("--snr", type=float, nargs="+", default=[0.01, 0.1, 1.0])
    m.add_argument("--modes", nargs="+", default=["marginalized", "ctf_known"])
    m.add_argument("--theta-check", type=int, default=20, help="images at the highest SNR checked in θ (0: none)")
    m.add_argument("--out", default="bench/reference/demo.npz")
    s = sub.add_parser("score", help="score trained models on a reference")
    s.add_argument("--reference", default="bench/reference/demo.npz")
    s.add_argument("--models", nargs="+", required=True, help="trained models (posterior.pt, card.json beside)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")  # the likelihood's progress
    np.seterr(under="ignore")
    make(args) if args.command == "make" else score(args)


if __name__ == "__main__":
    main()
