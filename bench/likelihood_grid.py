"""Convergence of the explicit likelihood's grids on the demo, measured (issue: shown, not assumed).

Held-out images of the demo's templates at fixed SNRs (the validation's
first fixed-SNR sets) get their per-template log-likelihoods on the
schema's default grids and on grids refined one step in each direction:
more orientation refinement levels, more refined cells per level, more
shift and defocus refinement levels, finer shift and nuisance grids (and,
with ``--heavy``, a coarse SO(3) grid 8× finer). For each refinement the
table gives, per SNR, the share of images whose per-template
log-likelihoods all change by less than 0.1 nats (all templates, and those
holding ≥ 1 % of the posterior), and the median and 95th percentile of the
largest change. It also gives the share of images whose posterior over the
templates (the log-likelihoods less their log-sum-exp, of which the
posterior over θ is made) changes by less than 0.1 nats, and the largest
KL divergence between the two posteriors over templates: a change common to
all templates moves nothing a user sees.

    python bench/likelihood_grid.py [--results results/demo] [--n 16] [--snr 0.1 0.01] [--threads 2] [--heavy]
                                    [--set defocus_points=16 ...] [--only "refine_levels + 2" ...] [--save grids.npz]

``--set`` changes the grids compared against (the schema's defaults otherwise); ``--only`` runs the named
refinements alone.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

from likelihood import schema_likelihood_defaults  # noqa: E402

from cryoflow.likelihood import comparison, exact  # noqa: E402
from cryoflow.sbi import heldout  # noqa: E402
from cryoflow.workflow import from_config  # noqa: E402

REFINEMENTS = {
    "refine_levels + 2": {"refine_levels": 2},
    "refine_top × 2": {"refine_top": 2},
    "nuisance_refine_levels + 2": {"nuisance_refine_levels": 2},
    "nuisance_refine_top × 2": {"nuisance_refine_top": 2},
    "shift points + 2 per axis, defocus points × 2": {"shift_points": 2, "defocus_points": 2},
}
HEAVY = {"coarse orientations × 8 (2 per axis)": {"orientations": 2}}  # with --heavy


def refined(cfg: dict, change: dict) -> dict:
    out = copy.deepcopy(cfg)
    for key, factor in change.items():
        if key in ("refine_levels", "nuisance_refine_levels"):
            out[key] += factor
        elif key == "orientations":
            out[key] = [factor * v for v in out[key]]
        elif key == "shift_points":
            out[key] += factor  # odd counts keep the midpoint grid's centre (zero shift)
        else:
            out[key] *= factor
    return out


def log_posterior(log_l: np.ndarray) -> np.ndarray:
    """log p(template | image) (B, T) under the uniform prior: the log-likelihoods less their log-sum-exp."""
    return log_l - np.logaddexp.reduce(log_l, axis=1, keepdims=True)


def changes(base: np.ndarray, other: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per image: the largest |Δ log L| over all templates, over templates with ≥ 1 % posterior mass, the
    largest |Δ log p(template | image)| (a change common to all templates leaves the posterior over θ as it is)
    and KL(p_base ‖ p_other) between the two posteriors over templates."""
    delta = np.abs(other - base)
    log_p, log_q = log_posterior(base), log_posterior(other)
    massive = np.where(np.exp(log_p) >= 0.01, delta, 0.0)
    kl = comparison.kl_divergence(base, other)  # over templates instead of θ cells: the same sum
    return delta.max(axis=1), massive.max(axis=1), np.abs(log_q - log_p).max(axis=1), kl


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", default="results/demo")
    parser.add_argument("--config", default="config/config.yaml")
    parser.add_argument("--n", type=int, default=16)
    parser.add_argument("--snr", type=float, nargs="+", default=[0.1, 0.01])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--heavy", action="store_true", help="also a coarse grid 8× finer (about 8× the time)")
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", help="base grids other than the defaults")
    parser.add_argument("--only", nargs="+", default=None, metavar="NAME", help="run these refinements alone")
    parser.add_argument("--save", default=None, metavar="NPZ", help="also write every grid's log-likelihoods here")
    args = parser.parse_args()
    refinements = {**REFINEMENTS, **(HEAVY if args.heavy else {})}
    if args.only:
        refinements = {name: refinements[name] for name in args.only}
    torch.set_num_threads(args.threads)
    results = Path(args.results)
    config = yaml.safe_load((ROOT / args.config).read_text())
    ensemble = from_config.load_ensemble(results / "templates" / "ensemble.npz")
    priors = from_config.priors_from_dict(json.loads((results / "model" / "priors.json").read_text()))
    simulator = from_config.build_simulator(ensemble, config, priors)
    base_cfg = schema_likelihood_defaults()
    for item in args.set:
        key, value = item.split("=", 1)
        base_cfg[key] = yaml.safe_load(value)
    print(
        f"{len(ensemble['theta_A'])} templates, box {simulator.box} px, {args.n} images per SNR; default grids: "
        f"{base_cfg}"
    )
    rows, saved = [], {}
    for k, snr in enumerate(args.snr):
        _, _, images = heldout.fixed_snr_set(simulator, snr, k, max(args.n, 1), config["seed"])
        images = images[: args.n].numpy()
        start = time.perf_counter()
        base = exact.ExplicitLikelihood(simulator, comparison.grid_settings(base_cfg, "marginalized"))
        found = base.log_likelihood(images, label=f"default grids, SNR {snr:g}")
        base_s = (time.perf_counter() - start) / len(images)
        base_ll = found["log_likelihood"]
        saved[f"snr{snr:g} default grids"] = base_ll
        coarse = saved[f"snr{snr:g} coarse grid only"] = found["log_likelihood_coarse"]
        rows.append((snr, "coarse grid only (no refinement)", *changes(base_ll, coarse), base_s))
        for name, change in refinements.items():
            start = time.perf_counter()
            engine = exact.ExplicitLikelihood(
                simulator, comparison.grid_settings(refined(base_cfg, change), "marginalized")
            )
            other = engine.log_likelihood(images, label=f"{name}, SNR {snr:g}")["log_likelihood"]
            seconds = (time.perf_counter() - start) / len(images)
            saved[f"snr{snr:g} {name}"] = other
            rows.append((snr, name, *changes(base_ll, other), seconds))
    if args.save:
        np.savez(args.save, **saved)
    print(
        "\n| SNR | against the default grids | images < 0.1 nats (all templates) | (templates ≥ 1 % mass) "
        "| median max Δ | 95 % max Δ | images < 0.1 nats in log p(template) | its 95 % max Δ "
        "| largest KL(default ‖ refined) over templates | s/image |"
    )
    print("|---:|:---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for snr, name, every, massive, posterior, kl, seconds in rows:
        print(
            f"| {snr:g} | {name} | {np.mean(every < 0.1):.0%} | {np.mean(massive < 0.1):.0%} | "
            f"{np.median(every):.3f} | {np.percentile(every, 95):.3f} | {np.mean(posterior < 0.1):.0%} | "
            f"{np.percentile(posterior, 95):.3f} | {kl.max():.1e} | {seconds:.2f} |"
        )


if __name__ == "__main__":
    main()
