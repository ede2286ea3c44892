"""The md rule: prepare the selected chains with PDBFixer and run OpenMM; the prepared PDB and a DCD trajectory."""

from __future__ import annotations

from cryoflow.ensemble import md
from cryoflow.job import Job


def run(job: Job) -> None:
    log = job.start_log()
    cfg = job.params.md
    keys = (
        "solvent",
        "temperature_K",
        "timestep_fs",
        "minimize_iterations",
        "equilibration_ps",
        "production_ps",
        "frame_interval_ps",
        "ph",
        "keep_heterogens",
        "platform",
    )
    settings = md.MDSettings(seed=job.params.seed, **{k: cfg[k] for k in keys})
    facts = md.run(job.input.pdb, job.output.prepared, job.output.trajectory, settings)
    log.info("md: %s", facts)
