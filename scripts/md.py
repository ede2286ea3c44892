"""Rule md: prepare the selected chains with PDBFixer and run OpenMM; the prepared PDB and a DCD trajectory."""

from cryoflow.ensemble import md
from cryoflow.logs import configure

log = configure(snakemake.log[0])
cfg = snakemake.params.md
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
settings = md.MDSettings(seed=snakemake.params.seed, **{k: cfg[k] for k in keys})
facts = md.run(snakemake.input.pdb, snakemake.output.prepared, snakemake.output.trajectory, settings)
log.info("md: %s", facts)
