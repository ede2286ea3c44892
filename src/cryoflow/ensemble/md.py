"""Molecular dynamics templates: prepare with PDBFixer, simulate with OpenMM, write a trajectory.

Preparation adds missing heavy atoms and hydrogens (at ``ph``), replaces
non-standard residues by their standard parents and removes heterogens
(waters and ions too) unless asked to keep them; missing loops are not
built. The force field is Amber14 with GBn2 implicit solvent by default, or
TIP3P-FB explicit water in a box with PME. Minimize, equilibrate at the
temperature, then run production and record frames; CUDA is used when
present, the CPU otherwise. Every random draw (velocities, Langevin noise)
comes from ``seed``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import openmm
from openmm import app, unit

from cryoflow.errors import InputError
from cryoflow.io.fileio import atomic_path

log = logging.getLogger(__name__)


@dataclass
class MDSettings:
    """The ``templates.md`` section of the config and the seed (defaults: the schema's), and two constants."""

    solvent: str  # implicit (GBn2) or explicit (TIP3P-FB, PME)
    temperature_K: float
    timestep_fs: float
    minimize_iterations: int
    equilibration_ps: float
    production_ps: float
    frame_interval_ps: float
    ph: float
    keep_heterogens: bool
    platform: str  # auto (CUDA when present), CUDA, CPU, Reference
    seed: int
    friction_per_ps: float = 1.0  # Langevin friction: not a config key
    padding_nm: float = 1.0  # solvent box padding: not a config key


def prepare(path: str | Path, settings: MDSettings):
    """PDBFixer on a PDB/mmCIF file: (topology, positions) ready for a force field."""
    from pdbfixer import PDBFixer

    try:
        fixer = PDBFixer(filename=str(path))
    except Exception as err:
        raise InputError(f"{path}: PDBFixer could not read the structure: {err}") from err
    fixer.findMissingResidues()
    missing_loops = sum(len(v) for v in fixer.missingResidues.values())
    fixer.missingResidues = {}  # loops are not modelled: the template is the structure given
    fixer.findNonstandardResidues()
    replaced = [(r.name, r.id, standard) for r, standard in fixer.nonstandardResidues]
    fixer.replaceNonstandardResidues()
    if not settings.keep_heterogens:
        fixer.removeHeterogens(keepWater=False)
    fixer.findMissingAtoms()
    n_missing = sum(len(v) for v in fixer.missingAtoms.values()) + sum(len(v) for v in fixer.missingTerminals.values())
    fixer.addMissingAtoms()
    fixer.addMissingHydrogens(settings.ph)
    log.info(
        "%s: %d missing heavy atoms added, %d missing residues left out, non-standard residues replaced: %s; "
        "hydrogens at pH %.1f; %d atoms",
        path,
        n_missing,
        missing_loops,
        replaced or "none",
        settings.ph,
        fixer.topology.getNumAtoms(),
    )
    return fixer.topology, fixer.positions


def build_system(topology, positions, settings: MDSettings):
    """Amber14 + GBn2 (implicit) or + TIP3P-FB water box with PME (explicit); H-bond constraints."""
    if settings.solvent == "implicit":
        forcefield = app.ForceField("amber14-all.xml", "implicit/gbn2.xml")
        options = {"nonbondedMethod": app.CutoffNonPeriodic, "nonbondedCutoff": 2.0 * unit.nanometer}
    elif settings.solvent == "explicit":
        forcefield = app.ForceField("amber14-all.xml", "amber14/tip3pfb.xml")
        modeller = app.Modeller(topology, positions)
        modeller.addSolvent(forcefield, padding=settings.padding_nm * unit.nanometer, model="tip3p")
        topology, positions = modeller.topology, modeller.positions
        options = {"nonbondedMethod": app.PME, "nonbondedCutoff": 1.0 * unit.nanometer}
    else:
        raise InputError(f"templates.md.solvent must be implicit or explicit, got {settings.solvent!r}")
    try:
        system = forcefield.createSystem(topology, constraints=app.HBonds, **options)
    except ValueError as err:
        raise InputError(f"the force field cannot describe the prepared structure: {err}") from err
    if settings.solvent == "explicit":
        system.addForce(openmm.MonteCarloBarostat(1.0 * unit.bar, settings.temperature_K * unit.kelvin))
    return topology, positions, system


def select_platform(name: str = "auto") -> openmm.Platform:
    """CUDA when present (``auto``), else CPU; or the platform named."""
    names = [openmm.Platform.getPlatform(i).getName() for i in range(openmm.Platform.getNumPlatforms())]
    if name == "auto":
        name = next(n for n in ("CUDA", "OpenCL", "CPU", "Reference") if n in names)
    if name not in names:
        raise InputError(f"templates.md.platform: OpenMM platform {name!r} not available here (have {names})")
    return openmm.Platform.getPlatformByName(name)


def run(structure_path, prepared_pdb, trajectory_dcd, settings: MDSettings) -> dict[str, Any]:
    """Prepare, minimize, equilibrate and run; write the prepared structure (PDB) and the frames (DCD).

    Only the solute is written (no water), so the trajectory matches the
    prepared PDB. Returns facts for the log: platform, atoms, frames, ns/day.
    """
    topology, positions = prepare(structure_path, settings)
    solute_topology, solute_positions = topology, positions
    topology, positions, system = build_system(topology, positions, settings)
    step_fs = settings.timestep_fs
    integrator = openmm.LangevinMiddleIntegrator(
        settings.temperature_K * unit.kelvin, settings.friction_per_ps / unit.picosecond, step_fs * unit.femtosecond
    )
    integrator.setRandomNumberSeed(settings.seed)
    platform = select_platform(settings.platform)
    simulation = app.Simulation(topology, system, integrator, platform)
    simulation.context.setPositions(positions)
    log.info(
        "OpenMM %s on platform %s: %d atoms (%s solvent)",
        openmm.__version__,
        platform.getName(),
        topology.getNumAtoms(),
        settings.solvent,
    )
    if platform.getName() in ("CPU", "Reference") and settings.solvent == "implicit":
        log.warning(
            "GBn2 implicit solvent is a custom force: on the %s platform it runs tens of steps per second "
            "for a small protein; production runs belong on a GPU (CUDA)",
            platform.getName(),
        )
    simulation.minimizeEnergy(maxIterations=settings.minimize_iterations)
    simulation.context.setVelocitiesToTemperature(settings.temperature_K * unit.kelvin, settings.seed)
    simulation.step(int(round(settings.equilibration_ps * 1000 / step_fs)))
    n_solute = solute_topology.getNumAtoms()
    every = max(1, int(round(settings.frame_interval_ps * 1000 / step_fs)))
    n_frames = max(1, int(round(settings.production_ps / settings.frame_interval_ps)))
    frames = []
    start = time.perf_counter()
    for i in range(n_frames):
        simulation.step(every)
        state = simulation.context.getState(getPositions=True, enforcePeriodicBox=False)
        frames.append(state.getPositions(asNumpy=True).value_in_unit(unit.angstrom)[:n_solute])
        if (i + 1) % max(1, n_frames // 10) == 0:
            log.info("production: frame %d/%d", i + 1, n_frames)
    seconds = time.perf_counter() - start
    ns_per_day = settings.production_ps / 1000 / max(seconds, 1e-9) * 86400
    with atomic_path(prepared_pdb) as tmp, open(tmp, "w") as handle:
        app.PDBFile.writeFile(solute_topology, solute_positions, handle, keepIds=True)
    with atomic_path(trajectory_dcd) as tmp, open(tmp, "wb") as handle:
        dcd = app.DCDFile(handle, solute_topology, step_fs * every * unit.femtosecond)
        for xyz in frames:
            dcd.writeModel(np.asarray(xyz) * unit.angstrom)
    facts = {
        "platform": platform.getName(),
        "atoms": topology.getNumAtoms(),
        "frames": n_frames,
        "ns_per_day": ns_per_day,
    }
    log.info("%d frames every %.2f ps; %.1f ns/day", n_frames, every * step_fs / 1000, ns_per_day)
    return facts
