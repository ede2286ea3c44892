"""Rule populations: p(θ) across one dataset's particles from their posteriors, and per-state STAR files."""

from pathlib import Path

import numpy as np
import pandas as pd

from cryoflow.analysis import populations
from cryoflow.io import cryosparc_results
from cryoflow.io.fileio import atomic_path, write_json
from cryoflow.io.star import particle_block_name, read_star, star_version, write_star
from cryoflow.logs import configure
from cryoflow.physics import theta
from cryoflow.report import figures

log = configure(snakemake.log[0])
cfg = snakemake.params.report
post = np.load(snakemake.input.posterior)
theta_range = post["theta_grid_range_A"]
n_dims = theta.dims(theta_range)
samples = theta.columns(post["samples"], n_dims)
means = theta.columns(post["mean"], n_dims)
bounds = theta.bounds(theta_range)
summary, estimates = {"n_particles": int(len(post["mean"]))}, []
for d in range(n_dims):  # a 2-D θ: each coordinate's marginal (an approximation to the joint population)
    estimate = populations.estimate(
        samples[d], bounds[d], cfg["population_bins"], cfg["population_bootstrap"], snakemake.params.seed
    )
    estimates.append(estimate)
    states = populations.modes(estimate["weights"], estimate["edges_A"])
    summary["population" + theta.suffix(d, n_dims)] = states
    log.info(
        "population%s: %s", theta.suffix(d, n_dims), [{k: round(v, 3) for k, v in state.items()} for state in states]
    )
with atomic_path(snakemake.output.table) as tmp:
    pd.DataFrame(
        {
            **({"coordinate": np.repeat(np.arange(1, n_dims + 1), len(estimates[0]["theta_A"]))} if n_dims > 1 else {}),
            "theta_A": np.concatenate([e["theta_A"] for e in estimates]),
            "density_per_A": np.concatenate([e["density"] for e in estimates]),
            "density_low": np.concatenate([e["low"] for e in estimates]),
            "density_high": np.concatenate([e["high"] for e in estimates]),
            "free_energy_kT": np.concatenate([e["free_energy_kT"] for e in estimates]),
        }
    ).to_csv(tmp, sep="\t", index=False)
figures.plot_populations(means, estimates, snakemake.output.figure)

# per-state particle subsets, for reconstruction in RELION or cryoSPARC (1-D θ)
folder = Path(snakemake.output.states)
folder.mkdir(parents=True, exist_ok=True)
rows = []
if n_dims == 1:
    intervals = cfg["states"] or [[s["theta_low_A"], s["theta_high_A"]] for s in summary["population"]]
    blocks = read_star(snakemake.input.star)
    name = particle_block_name(blocks, snakemake.input.star)
    version = star_version(snakemake.input.star)
    for k, (low, high) in enumerate(intervals, start=1):
        keep = populations.mass_inside(samples[0], low, high) >= cfg["state_min_mass"]
        subset = dict(blocks)
        subset[name] = blocks[name][keep].reset_index(drop=True)
        path = folder / f"state{k}.star"
        write_star(path, subset, version)
        if snakemake.params.cryosparc:  # for cryoSPARC's Import Result Group
            cryosparc_results.write_results(snakemake.params.cryosparc, subset[name], path.with_suffix(".cs"))
            cryosparc_results.write_result_group(
                path.with_suffix(".cs"), path.with_suffix(".csg"), f"cryoflow state {k}, θ in [{low:.2f}, {high:.2f}) Å"
            )
        rows.append(
            {"state": k, "theta_low_A": low, "theta_high_A": high, "n_particles": int(keep.sum()), "star": path.name}
        )
        log.info(
            "state %d, θ in [%.2f, %.2f) Å: %d particles with ≥ %.0f %% of their posterior inside",
            k,
            low,
            high,
            keep.sum(),
            100 * cfg["state_min_mass"],
        )
else:
    log.info("per-state STAR files need a 1-D θ; none written")
with atomic_path(folder / "states.tsv") as tmp:
    pd.DataFrame(rows, columns=["state", "theta_low_A", "theta_high_A", "n_particles", "star"]).to_csv(
        tmp, sep="\t", index=False
    )
summary["states"] = rows
write_json(snakemake.output.summary, summary)
