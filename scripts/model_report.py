"""Rule model_report: the model's calibration on held-out simulations and its template ensemble."""

import json

import numpy as np

from cryoflow.analysis import diagnostics
from cryoflow.io.fileio import sha256_files, write_json
from cryoflow.logs import configure
from cryoflow.physics import theta
from cryoflow.report import figures

log = configure(snakemake.log[0])
seed = snakemake.params.seed
sim = dict(np.load(snakemake.input.simulations))
numbers, coverage = diagnostics.validation_summary(sim, seed)
n_dims = diagnostics.theta_dims(sim["theta_true"])
pits = [
    diagnostics.sbc_pit(samples, truth_d, seed)
    for samples, truth_d in zip(theta.columns(sim["samples"], n_dims), theta.columns(sim["theta_true"], n_dims))
]
ks_pvalues = [numbers["sbc_ks_pvalue" + theta.suffix(d, n_dims)] for d in range(n_dims)]
if hasattr(snakemake.input, "likelihood"):  # the explicit-likelihood reference on the same fixed-SNR images
    numbers["likelihood_reference"] = diagnostics.likelihood_comparison(dict(np.load(snakemake.input.likelihood)))
card = json.loads(open(snakemake.input.card).read())
snr_range = card.get("priors", {}).get("snr_range")  # the SNR prior the estimator was trained on
if snr_range:
    fixed = numbers["fixed_snr"] + numbers.get("likelihood_reference", [])
    for warning in diagnostics.mark_training_snr(fixed, snr_range):
        log.warning("%s", warning)
figures.plot_calibration(
    diagnostics.CREDIBILITY_LEVELS,
    coverage,
    sim,
    pits,
    ks_pvalues,
    snakemake.output.calibration,
    numbers["fixed_snr"],
    numbers.get("likelihood_reference", ()),
)
for entry in numbers["fixed_snr"]:
    log.info("at SNR %g: %s", entry["snr"], {k: round(v, 3) for k, v in entry.items() if k.endswith("_A")})
for entry in numbers.get("likelihood_reference", ()):
    log.info(
        "exact posterior (%s) at SNR %g: %s",
        entry["nuisance"],
        entry["snr"],
        {k: round(v, 3) for k, v in entry.items() if isinstance(v, float)},
    )
ensemble = np.load(snakemake.input.ensemble)
figures.plot_ensemble(ensemble["theta_A"], ensemble["rmsd_A"], snakemake.output.ensemble)
numbers["model"] = {
    "name": card.get("name"),
    "card": snakemake.input.card,
    "card_sha256": sha256_files(snakemake.input.card),
}
write_json(snakemake.output.summary, numbers)
log.info(
    "calibration on %d held-out simulations: %s",
    len(sim["theta_true"]),
    {k: round(v, 3) for k, v in numbers.items() if isinstance(v, float)},
)
