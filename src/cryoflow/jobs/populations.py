"""The populations rule: p(θ) across one dataset's particles from their posteriors, and per-state STAR files
(and cryoSPARC result groups) of the particles whose posterior lies in each state."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import cast

import numpy as np
import pandas as pd

from cryoflow.analysis import populations
from cryoflow.io import cryosparc_results
from cryoflow.io.fileio import atomic_path, write_json
from cryoflow.io.star import particle_block_name, read_star, star_version, write_star
from cryoflow.job import Job
from cryoflow.physics import theta
from cryoflow.report import figures

log = logging.getLogger("cryoflow.populations")
STATE_COLUMNS = ["state", "theta_low_A", "theta_high_A", "n_particles", "star"]


def population_table(estimates: list[populations.PopulationEstimate]) -> pd.DataFrame:
    """One row per θ bin (and coordinate, for a 2-D θ): density with its bootstrap band and free energy."""
    n_dims = len(estimates)
    coordinate = np.repeat(np.arange(1, n_dims + 1), len(estimates[0]["theta_A"]))
    return pd.DataFrame(
        {
            **({"coordinate": coordinate} if n_dims > 1 else {}),
            "theta_A": np.concatenate([e["theta_A"] for e in estimates]),
            "density_per_A": np.concatenate([e["density"] for e in estimates]),
            "density_low": np.concatenate([e["low"] for e in estimates]),
            "density_high": np.concatenate([e["high"] for e in estimates]),
            "free_energy_kT": np.concatenate([e["free_energy_kT"] for e in estimates]),
        }
    )


def write_states(
    samples: np.ndarray, intervals: list, min_mass: float, star: str, folder: Path, cryosparc: str | None
) -> list[dict]:
    """``state<k>.star`` (and ``.cs``/``.csg`` beside a cryoSPARC source) for each θ interval: the particles
    with at least ``min_mass`` of their posterior samples inside; one row of ``states.tsv`` each."""
    blocks = read_star(star)
    name, version = particle_block_name(blocks, star), star_version(star)
    rows = []
    for k, (low, high) in enumerate(intervals, start=1):
        keep = populations.mass_inside(samples, low, high) >= min_mass
        subset = {**blocks, name: blocks[name][keep].reset_index(drop=True)}
        path = folder / f"state{k}.star"
        write_star(path, subset, version)
        if cryosparc:  # for cryoSPARC's Import Result Group
            label = f"cryoflow state {k}, θ in [{low:.2f}, {high:.2f}) Å"
            cryosparc_results.write_results(cryosparc, subset[name], path.with_suffix(".cs"))
            cryosparc_results.write_result_group(path.with_suffix(".cs"), path.with_suffix(".csg"), label)
        rows.append(dict(zip(STATE_COLUMNS, (k, low, high, int(keep.sum()), path.name))))
        log.info(
            "state %d, θ in [%.2f, %.2f) Å: %d particles with ≥ %.0f %% of their posterior inside",
            k,
            low,
            high,
            keep.sum(),
            100 * min_mass,
        )
    return rows


def run(job: Job) -> None:
    job.start_log()
    cfg, seed = job.params.report, job.params.seed
    post = np.load(job.input.posterior)
    theta_range = post["theta_grid_range_A"]
    n_dims = theta.dims(theta_range)
    samples = theta.columns(post["samples"], n_dims)
    summary: dict = {"n_particles": int(len(post["mean"]))}
    estimates: list[populations.PopulationEstimate] = []
    for d, bounds in enumerate(theta.bounds(theta_range)):  # a 2-D θ: each coordinate's marginal
        estimate = populations.estimate(samples[d], bounds, cfg["population_bins"], cfg["population_bootstrap"], seed)
        estimates.append(estimate)
        states = populations.modes(estimate["weights"], estimate["edges_A"])
        summary["population" + theta.suffix(d, n_dims)] = states
        rounded = [{k: round(v, 3) for k, v in cast(dict[str, float], state).items()} for state in states]
        log.info("population%s: %s", theta.suffix(d, n_dims), rounded)
    with atomic_path(job.output.table) as tmp:
        population_table(estimates).to_csv(tmp, sep="\t", index=False)
    figures.plot_populations(theta.columns(post["mean"], n_dims), estimates, job.output.figure)
    folder = Path(job.output.states)  # per-state particle subsets, for reconstruction in RELION or cryoSPARC
    folder.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    if n_dims == 1:
        intervals = cfg["states"] or [[s["theta_low_A"], s["theta_high_A"]] for s in summary["population"]]
        rows = write_states(samples[0], intervals, cfg["state_min_mass"], job.input.star, folder, job.params.cryosparc)
    else:
        log.info("per-state STAR files need a 1-D θ; none written")
    with atomic_path(folder / "states.tsv") as tmp:
        pd.DataFrame(rows, columns=STATE_COLUMNS).to_csv(tmp, sep="\t", index=False)
    write_json(job.output.summary, {**summary, "states": rows})
