"""Score trained models against an exact posterior already computed: what limits the estimator (Fig. 2C).

The explicit likelihood of the validation's held-out images does not depend
on the model, and it is the costly part (``validation/likelihood.npz``,
rule ``likelihood_reference``). This bench regenerates the same images
(the validation's fixed-SNR sets, from the reference model's templates,
priors and seed; their θ are checked against the reference's) and scores
each model given on them: per nuisance mode and SNR, the 68th percentile of
|sample − θ| against the exact posterior's, the mean σ, the median KL
divergence from the exact posterior, and the mean negative log density at
the true θ (the quantity training minimizes; the exact posterior's is the
lowest any estimator can reach on these images, up to their scatter).
Models that differ only in training steps or network size tell what closes
the gap to the exact posterior.

    python bench/likelihood_rescore.py --reference results/demo_ctf/validation/likelihood.npz \
        --models results/demo_ctf/model/posterior.pt results/demo_ctf_long/model/posterior.pt \
        [--config config/config.yaml] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from cryoflow.analysis import diagnostics  # noqa: E402
from cryoflow.likelihood import comparison  # noqa: E402
from cryoflow.sbi import heldout, models  # noqa: E402
from cryoflow.workflow import from_config, schema  # noqa: E402


def nll_at_truth(log_density: np.ndarray, grid: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """−log p(θ_true | image) (B,) of grid log densities (B, G) on equally spaced cell centres ``grid``."""
    step = float(grid[1] - grid[0])
    normed = log_density - np.logaddexp.reduce(log_density, axis=1, keepdims=True) - np.log(step)
    cell = np.clip(np.round((theta - grid[0]) / step).astype(int), 0, len(grid) - 1)
    return -normed[np.arange(len(theta)), cell]


def scored(ref: dict, model_path: Path, simulator, validation: dict, seed: int) -> list[dict]:
    """The estimator columns of ``ref`` recomputed for ``model_path`` on the same images, then compared."""
    model, _ = models.load_model(model_path, torch.device("cpu"))
    grid = ref["grid_A"]
    result: dict[str, list] = {}
    for mode in dict.fromkeys(ref["mode"].tolist()):
        for k, snr in enumerate(validation["fixed_snr"]):
            rows = (ref["mode"] == mode) & (ref["snr"] == float(snr))
            if not rows.any():
                continue
            m = int(rows.sum())
            theta, nuisance, images = heldout.fixed_snr_set(simulator, snr, k, validation["n_fixed_snr"], seed)
            if not np.allclose(theta[:m].numpy(), ref["theta_true"][rows], atol=1e-5):
                raise SystemExit(f"{model_path}: the regenerated SNR {snr:g} images are not the reference's")
            known = {key: value[:m] for key, value in nuisance.items()}
            log_q = comparison.estimator_log_density(model, images[:m].numpy(), grid, torch.device("cpu"), ctf=known)
            part = comparison.posteriors(
                ref["log_likelihood"][rows], ref["theta_nodes_A"], log_q, grid, validation["n_samples"], seed + k
            )
            part.update(mode=ref["mode"][rows], snr=ref["snr"][rows], theta_true=ref["theta_true"][rows])
            for key, value in part.items():
                result.setdefault(key, []).append(value)
    result = {key: np.concatenate(value) for key, value in result.items()}
    entries = diagnostics.likelihood_comparison(result)
    for entry in entries:
        rows = (result["mode"] == entry["nuisance"]) & (result["snr"] == entry["snr"])
        for name in ("exact", "estimator"):
            density = result[f"{name}_log_density"][rows].astype(np.float64)
            entry[f"{name}_nll"] = float(np.mean(nll_at_truth(density, grid, result["theta_true"][rows])))
    return entries


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference", required=True, help="a likelihood_reference output (validation/likelihood.npz)")
    parser.add_argument("--models", nargs="+", required=True, help="trained models (posterior.pt)")
    parser.add_argument("--config", default="config/config.yaml")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = schema.validate(yaml.safe_load((ROOT / args.config).read_text()))  # the schema's defaults filled in
    results = Path(args.reference).resolve().parents[1]
    ensemble = from_config.load_ensemble(results / "templates" / "ensemble.npz")
    priors = from_config.priors_from_dict(json.loads((results / "model" / "priors.json").read_text()))
    simulator = from_config.build_simulator(ensemble, config, priors)
    with np.load(args.reference) as handle:
        ref = {key: handle[key] for key in handle.files}
    print(
        "\n| model | steps | nuisances of the exact posterior | SNR | n | 68 % \\|sample − θ\\| exact / estimator (Å) "
        "| ratio | mean σ exact / estimator (Å) | median KL | mean −log p(θ) exact / estimator |"
    )
    print("|:---|---:|:---|---:|---:|---:|---:|---:|---:|---:|")
    for path in map(Path, args.models):
        card = json.loads((path.parent / "card.json").read_text())
        for e in scored(ref, path, simulator, config["validation"], config["seed"]):
            print(
                f"| {path.parent.parent.name} | {card.get('best_step', '?')} | {e['nuisance']} | {e['snr']:g} | "
                f"{e['n']} | {e['exact_p68_error_sample_A']:.2f} / {e['estimator_p68_error_sample_A']:.2f} | "
                f"{e['p68_ratio_estimator_to_exact']:.2f} | {e['exact_mean_std_A']:.2f} / "
                f"{e['estimator_mean_std_A']:.2f} | {e['median_kl_exact_to_estimator']:.2f} | "
                f"{e['exact_nll']:.2f} / {e['estimator_nll']:.2f} |"
            )


if __name__ == "__main__":
    main()
