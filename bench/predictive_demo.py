"""The posterior-predictive check against the prior-predictive one, with the demo's trained model.

    snakemake --cores all                         # the demo, once
    python bench/predictive_demo.py [results/demo] [--n 1000]

Particle sets are simulated on the training grid with the demo's own simulator (ADK normal modes,
its priors) and changed one way at a time: the demo's 70/30 mixture at SNR 0.1-0.5 (a dataset that is
not the prior, but a right simulator), a bead width twice the model's, defocus values in the STAR
rows half the images' own, inverted contrast, and conformations beyond the ensemble (θ 11-13 Å along
the second mode, the ensemble ending at 9 Å). Each set is inferred with the demo model and checked
both ways; the table gives MMD² and p-values (permutation, 1000): the posterior-predictive check's two
tests (latents, power spectra), its combined p-value, and the prior-predictive test.
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from cryoflow.analysis import diagnostics, predictive  # noqa: E402
from cryoflow.ensemble import templates  # noqa: E402
from cryoflow.io import structure  # noqa: E402
from cryoflow.physics import theta  # noqa: E402
from cryoflow.physics.ctf import RECORDED_CTF  # noqa: E402
from cryoflow.sbi import inference, models  # noqa: E402
from cryoflow.workflow import from_config  # noqa: E402

PERMUTATIONS = 1000  # the smallest p-value is 1/1001, and 2/1001 for the check's combined p


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="?", default="results/demo")
    parser.add_argument("--n", type=int, default=1000)
    args = parser.parse_args()
    results = Path(args.results)
    torch.set_num_threads(2)
    card = json.loads((results / "model" / "card.json").read_text())
    config = {"image": card["config"]["image"], "simulator": card["config"]["simulator"]}
    model, _ = models.load_model(results / "model" / "posterior.pt")
    ensemble = from_config.load_ensemble(results / "templates" / "ensemble.npz")
    priors = from_config.priors_from_dict(json.loads((results / "model" / "priors.json").read_text()))
    simulator = from_config.build_simulator(ensemble, config, priors, projection="atoms")
    theta_range = theta.range_of(ensemble["theta_A"])
    n = args.n

    def embed(images):
        return inference.posterior_batches(
            model, inference.batched(images, 256), len(images), grid_points=64, n_samples=1
        )["latent"]

    def mixture(count, generator):
        first = torch.rand(count, generator=generator) < 0.7
        return torch.where(first, torch.full((count,), -5.0), torch.full((count,), 4.5)) + 0.5 * torch.randn(
            count, generator=generator
        )

    def demo_like(sigma=None, thetas=None):
        sim = simulator
        if thetas is not None:  # a wider ensemble: the same modes, further out
            atoms = structure.select_atoms(
                structure.load_structure(ROOT / card["config"]["structure"]["source"]),
                card["config"]["structure"]["chains"],
                "CA",
            )
            nma = card["config"]["templates"]["nma"]
            wide = templates.normal_mode_ensemble(
                atoms, 31, tuple(nma["modes"]), 15.0, nma["cutoff_A"], nma["spring_constant"]
            )
            data = {"coords_A": wide.coords.astype(np.float32), "theta_A": wide.theta_A, "weights": ensemble["weights"]}
            wide_priors = from_config.priors_from_dict(
                {**json.loads((results / "model" / "priors.json").read_text()), "theta_range_A": [-15.0, 15.0]}
            )
            sim = from_config.build_simulator(data, config, wide_priors, projection="atoms")
        sim.priors.snr_range = (0.1, 0.5)
        if sigma is not None:
            sim = from_config.build_simulator(
                ensemble,
                config,
                from_config.priors_from_dict(
                    {
                        **json.loads((results / "model" / "priors.json").read_text()),
                        "bead_sigma_range_A": [sigma, sigma],
                        "snr_range": [0.1, 0.5],
                    }
                ),
                projection="atoms",
            )
        return sim

    cases = {
        "demo mixture, SNR 0.1-0.5 (right simulator)": dict(source=demo_like(), theta=mixture),
        "bead width 4 Å (model: 2 Å)": dict(source=demo_like(sigma=4.0), theta=mixture),
        "STAR defocus half the images' own": dict(source=demo_like(), theta=mixture, recorded=0.5),
        "contrast inverted": dict(source=demo_like(), theta=mixture, flip=True),
        "state beyond the ensemble (θ 11-13 Å)": dict(
            source=demo_like(thetas=True), theta=lambda c, g: 11.0 + 2.0 * torch.rand(c, generator=g)
        ),
    }
    print(f"{n} particles per case, demo model {results}")
    print(
        "| case | PPC latents MMD² | p | PPC spectra MMD² | p | PPC p (combined) | prior-predictive MMD² | p "
        "| atypical |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for k, (name, case) in enumerate(cases.items()):
        generator = torch.Generator().manual_seed(100 + k)
        source = case["source"]
        truth = case["theta"](n, generator)
        nuisance = source.sample_nuisance(n, generator)
        with torch.no_grad():
            images = source.simulate(truth, generator, nuisance).numpy()
        images = -images if case.get("flip") else images
        ctf = {key: nuisance[key].numpy().copy() for key in RECORDED_CTF}
        if case.get("recorded"):
            for key in ("defocus_u_A", "defocus_v_A"):
                ctf[key] = ctf[key] * case["recorded"]
        post = inference.posterior_batches(
            model, inference.batched(images, 256), n, grid_points=512, n_samples=200, seed=k
        )
        pps = {"1": predictive.PredictiveSimulator(simulator, None, whitened=False)}
        result = predictive.check(
            pps, images, ["1"] * n, post["samples"], post["latent"], theta_range, ctf, PERMUTATIONS, k, embed
        )
        prior = simulator.simulate(simulator.sample_theta(n, generator), generator).numpy()
        prior_test = diagnostics.mmd_test(embed(prior), post["latent"], PERMUTATIONS, k, max_points=n)
        print(
            f"| {name} | {result.mmd2:.4f} | {result.latent_pvalue:.4f} | {result.spectrum_mmd2:.4f} | "
            f"{result.spectrum_pvalue:.4f} | {result.pvalue:.4f} | {prior_test['mmd2']:.4f} | "
            f"{prior_test['pvalue']:.4f} | {result.n_atypical} |"
        )


if __name__ == "__main__":
    main()
