"""The model_report rule: the model's calibration on held-out simulations and its template ensemble."""

from __future__ import annotations

import logging

import numpy as np

from cryoflow.analysis import diagnostics
from cryoflow.io.fileio import read_json, sha256_files, write_json
from cryoflow.job import Job
from cryoflow.physics import theta
from cryoflow.report import figures

log = logging.getLogger("cryoflow.model_report")


def log_numbers(numbers: dict, n_simulations: int) -> None:
    for entry in numbers["fixed_snr"]:
        log.info("at SNR %g: %s", entry["snr"], {k: round(v, 3) for k, v in entry.items() if k.endswith("_A")})
    for entry in numbers.get("likelihood_reference", ()):
        rounded = {k: round(v, 3) for k, v in entry.items() if isinstance(v, float)}
        log.info("exact posterior (%s) at SNR %g: %s", entry["nuisance"], entry["snr"], rounded)
    rounded = {k: round(v, 3) for k, v in numbers.items() if isinstance(v, float)}
    log.info("calibration on %d held-out simulations: %s", n_simulations, rounded)


def run(job: Job) -> None:
    job.start_log()
    seed, inputs = job.params.seed, job.input
    sim = dict(np.load(inputs.simulations))
    numbers, coverage = diagnostics.validation_summary(sim, seed)
    n_dims = diagnostics.theta_dims(sim["theta_true"])
    truths = zip(theta.columns(sim["samples"], n_dims), theta.columns(sim["theta_true"], n_dims))
    pits = [diagnostics.sbc_pit(samples, truth_d, seed) for samples, truth_d in truths]
    ks_pvalues = [numbers["sbc_ks_pvalue" + theta.suffix(d, n_dims)] for d in range(n_dims)]
    if "likelihood" in inputs:  # the explicit-likelihood reference on the same fixed-SNR images
        numbers["likelihood_reference"] = diagnostics.likelihood_comparison(dict(np.load(inputs.likelihood)))
    card = read_json(inputs.card)
    snr_range = card.get("priors", {}).get("snr_range")  # the SNR prior the estimator was trained on
    if snr_range:
        fixed = numbers["fixed_snr"] + numbers.get("likelihood_reference", [])
        for warning in diagnostics.mark_training_snr(fixed, snr_range):
            log.warning("%s", warning)
    verdict = diagnostics.likelihood_verdict(numbers.get("likelihood_reference", []))
    if verdict:
        numbers["likelihood_verdict"] = verdict
        log.info("%s", verdict)
    figures.plot_calibration(
        diagnostics.CREDIBILITY_LEVELS,
        coverage,
        sim,
        pits,
        ks_pvalues,
        job.output.calibration,
        numbers["fixed_snr"],
        numbers.get("likelihood_reference", ()),
    )
    ensemble = np.load(inputs.ensemble)
    figures.plot_ensemble(ensemble["theta_A"], ensemble["rmsd_A"], job.output.ensemble)
    numbers["model"] = {"name": card.get("name"), "card": inputs.card, "card_sha256": sha256_files(inputs.card)}
    write_json(job.output.summary, numbers)
    log_numbers(numbers, len(sim["theta_true"]))
