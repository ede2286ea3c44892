"""The paper's Fig. 2D: seconds per image of the explicit likelihood against the amortized posterior.

Both run in this process on the same held-out images of a trained model
(the demo's, ``results/demo`` after ``snakemake --cores all``): the
explicit likelihood (``cryoflow.likelihood.exact``, the grids of the schema's
``validation.likelihood`` defaults, nuisances marginalized) on templates
subsets of 10 and 20 of the model's templates, and the amortized posterior
(embedding + exact grid density + summaries, ``inference.posterior_stream``)
for 10, 100 and 1 000 images. Training, the amortized method's fixed cost,
is the model card's ``wall_time_s`` (reported, not re-measured); the
break-even point is the number of images at which training has paid for
itself. The explicit likelihood costs the same per image however many
images there are, so rows beyond ``--max-explicit`` images use the rate
measured on ``--max-explicit`` images plus the set-up, marked "extrapolated".

    python bench/likelihood.py [--results results/demo] [--images 10 100 1000] [--templates 10 20]
                               [--max-explicit 100] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from cryoflow.likelihood import comparison, exact  # noqa: E402
from cryoflow.sbi import heldout, inference, models  # noqa: E402
from cryoflow.workflow import from_config  # noqa: E402


def schema_likelihood_defaults() -> dict:
    schema = yaml.safe_load((ROOT / "workflow" / "schemas" / "config.schema.yaml").read_text())
    block = schema["definitions"]["likelihood"]["properties"]
    return {key: value["default"] for key, value in block.items()}


def subset(ensemble: dict, n: int) -> dict:
    """``n`` of the ensemble's templates, evenly spread and keeping both ends of θ."""
    index = np.unique(np.round(np.linspace(0, len(ensemble["theta_A"]) - 1, n)).astype(int))
    return {**ensemble, "coords_A": ensemble["coords_A"][index], "theta_A": ensemble["theta_A"][index]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", default="results/demo", help="a trained model's results folder")
    parser.add_argument("--config", default="config/config.yaml")
    parser.add_argument("--images", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--templates", type=int, nargs="+", default=[10, 20])
    parser.add_argument("--max-explicit", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = Path(args.results)
    config = yaml.safe_load((ROOT / args.config).read_text())
    ensemble = from_config.load_ensemble(results / "templates" / "ensemble.npz")
    priors = from_config.priors_from_dict(json.loads((results / "model" / "priors.json").read_text()))
    model, card = models.load_model(results / "model" / "posterior.pt")
    simulator = from_config.build_simulator(ensemble, config, priors)
    n_max = max(args.images)
    theta, nuisance, images = heldout.fixed_snr_set(simulator, 0.1, 0, n_max, config["seed"])
    images = images.numpy()
    cfg = schema_likelihood_defaults()
    settings = comparison.grid_settings(cfg, "marginalized")
    print(
        f"model {results}: {len(ensemble['theta_A'])} templates, box {simulator.box} px; {args.threads} threads; "
        f"torch {torch.__version__}; explicit grids {cfg['orientations']} orientations, {cfg['refine_levels']} "
        f"refinement levels of {cfg['refine_top']} cells, {cfg['shift_points']}² shifts, "
        f"{cfg['defocus_points']} defocus × {cfg['b_factor_points']} B-factor points"
    )
    amortized = {}
    for n in args.images:
        start = time.perf_counter()
        for _ in inference.posterior_stream(
            model, inference.batched(images[:n], 256), n, 512, 200, label="bench", ctf=nuisance
        ):
            pass
        amortized[n] = (time.perf_counter() - start) / n
    explicit = {}
    for t in args.templates:
        sim_t = from_config.build_simulator(subset(ensemble, t), config, priors)
        start = time.perf_counter()
        engine = exact.ExplicitLikelihood(sim_t, settings)
        setup = time.perf_counter() - start
        measured = min(args.max_explicit, n_max)
        start = time.perf_counter()
        engine.log_likelihood(images[:measured], label=f"bench {t} templates")
        per_image = (time.perf_counter() - start) / measured
        explicit[t] = (setup, per_image, measured)
    training_s = float(card.get("wall_time_s", float("nan")))
    print(
        f"\ntraining (the amortized method's fixed cost): {training_s:.0f} s "
        f"({card.get('steps_run')} steps at {card.get('steps_per_s', float('nan')):.2f} steps/s, model card)\n"
    )
    print("| templates | images | explicit s/image | amortized s/image | ratio | explicit total s | note |")
    print("|---:|---:|---:|---:|---:|---:|:---|")
    for t, (setup, per_image, measured) in explicit.items():
        for n in args.images:
            total = setup + per_image * n
            explicit_per_image = total / n
            note = "measured" if n <= measured else f"extrapolated from {measured} images"
            print(
                f"| {t} | {n} | {explicit_per_image:.3g} | {amortized[n]:.3g} | "
                f"{explicit_per_image / amortized[n]:,.0f}× | {total:.1f} | {note} |"
            )
    print()
    for t, (setup, per_image, _) in explicit.items():
        saving = per_image - amortized[n_max]
        print(
            f"{t} templates: explicit set-up {setup:.1f} s, {per_image:.3g} s per image; training has paid for "
            f"itself after {training_s / saving:,.0f} images"
        )


if __name__ == "__main__":
    main()
