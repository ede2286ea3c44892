import glob
import os
import re
from pathlib import Path

import jsonschema
import yaml

SCHEMA = Path(workflow.basedir) / "workflow" / "schemas" / "config.schema.yaml"
# as cryoflow.structure.PDB_ID_PATTERN: 4-character or extended PDB ids
PDB_ID = re.compile(
    r"^[0-9][A-Za-z0-9]{3}$|^pdb_[0-9]{5}[A-Za-z0-9]{3}$", re.IGNORECASE
)


class ConfigError(Exception):
    """A config value is wrong; the message names the key."""


def key_path(error):
    return ".".join(str(p) for p in error.absolute_path) or "(top level)"


def check_config(cfg):
    """Validate against the JSON schema (filling defaults), then check files and cross-key rules."""
    schema = yaml.safe_load(SCHEMA.read_text())
    validator_class = jsonschema.validators.validator_for(schema)
    errors = sorted(
        validator_class(schema).iter_errors(cfg), key=lambda e: list(e.absolute_path)
    )
    if errors:
        lines = [f"  {key_path(e)}: {e.message}" for e in errors]
        raise ConfigError("invalid config:\n" + "\n".join(lines))
    validate(cfg, schema=str(SCHEMA), set_default=True)
    source = cfg["structure"]["source"]
    if not PDB_ID.match(source) and not Path(source).is_file():
        raise ConfigError(
            f"structure.source: file {source!r} not found (and it is not a 4-character PDB id)"
        )
    if not cfg["demo"]["enabled"]:
        star = cfg["particles"]["star"]
        if not star:
            raise ConfigError("particles.star: required when demo.enabled is false")
        if not Path(star).is_file():
            raise ConfigError(f"particles.star: file {star!r} not found")
    elif not cfg["demo"].get("populations"):
        raise ConfigError("demo.populations: required when demo.enabled is true")
    user = cfg["templates"]["ensemble"]
    if cfg["templates"]["method"] == "ensemble":
        if not user["pdb_files"] and not user["trajectory"]:
            raise ConfigError(
                "templates.ensemble: give pdb_files or a trajectory (templates.method is ensemble)"
            )
        for pattern in user["pdb_files"]:
            if not glob.glob(pattern):
                raise ConfigError(
                    f"templates.ensemble.pdb_files: no file matches {pattern!r}"
                )
    if cfg["templates"]["theta_dims"] == 2:
        if cfg["templates"]["method"] != "nma":
            raise ConfigError(
                "templates.theta_dims: 2 needs templates.method nma (two modes on a grid)"
            )
    if cfg["demo"]["enabled"]:
        two_d = cfg["templates"]["theta_dims"] == 2
        for i, state in enumerate(cfg["demo"]["populations"]):
            if isinstance(state["theta_A"], list) != two_d:
                raise ConfigError(
                    f"demo.populations.{i}.theta_A: give "
                    + ("[θ1, θ2]" if two_d else "one number")
                    + f" when templates.theta_dims is {cfg['templates']['theta_dims']}"
                )
    vol = cfg["volumes"]
    vol.setdefault("voxel_size_A", cfg["image"]["pixel_size_A"])
    vol.setdefault("box_vox", cfg["image"]["box_px"])
    return cfg


try:
    check_config(config)
except ConfigError as err:
    raise WorkflowError(str(err))

# Rule scripts import the cryoflow package from src/ in whichever conda env
# they run; jobs on cluster nodes re-read this Snakefile and get the same.
SRC = str(Path(workflow.basedir) / "src")
_pythonpath = os.environ.get("PYTHONPATH", "")
if SRC not in _pythonpath.split(os.pathsep):
    os.environ.update(PYTHONPATH=os.pathsep.join(p for p in (SRC, _pythonpath) if p))

NAME = config["name"]
RESULTS = f"results/{NAME}"
LOGS = f"logs/{NAME}"
BENCH = f"benchmarks/{NAME}"
# a 2-D θ grid has n_templates per axis
N_TEMPLATES = config["templates"]["n_templates"] ** config["templates"]["theta_dims"]
TEMPLATE_IDS = [f"{i:03d}" for i in range(N_TEMPLATES)]


def all_cores(cluster_default=8):
    """Threads of rules that use a whole machine: --cores locally; on a cluster (no --cores) the
    default, which a profile's set-threads overrides."""
    try:
        return workflow.cores
    except WorkflowError:
        return cluster_default


# particles are preprocessed and inferred in shards (scatter), then gathered
SHARDS = [f"{i:03d}" for i in range(config["particles"]["shards"])]


def template_inputs(wildcards=None):
    """The reference; with templates.method: md, the prepared structure and its trajectory as well."""
    inputs = {"pdb": f"{RESULTS}/structure/reference.pdb"}
    if config["templates"]["method"] == "md":
        inputs["prepared"] = f"{RESULTS}/templates/md/prepared.pdb"
        inputs["trajectory"] = f"{RESULTS}/templates/md/trajectory.dcd"
    return inputs


def simulator_inputs(wildcards=None):
    """Files the simulator is built from: ensemble, resolved priors, maps and noise spectrum when used."""
    inputs = {
        "ensemble": f"{RESULTS}/templates/ensemble.npz",
        "priors": f"{RESULTS}/model/priors.json",
    }
    if config["simulator"]["projection"] == "volumes":
        inputs["maps"] = expand(f"{RESULTS}/volumes/template_{{i}}.mrc", i=TEMPLATE_IDS)
    if config["simulator"]["noise_power_tsv"]:
        inputs["noise"] = config["simulator"]["noise_power_tsv"]
    return inputs


def priors_inputs(wildcards=None):
    """The ensemble (for the θ range), and the particles' STAR file when priors come from it."""
    inputs = {"ensemble": f"{RESULTS}/templates/ensemble.npz"}
    if config["simulator"]["priors_from_star"]:
        inputs["star"] = particles_star()
    return inputs


def particles_star():
    """The STAR file the particle stage reads: the demo's or the user's."""
    if config["demo"]["enabled"]:
        return f"{RESULTS}/demo/Extract/job007/particles.star"
    return config["particles"]["star"]


def final_outputs():
    return [
        f"{RESULTS}/report/summary.json",
        expand(f"{RESULTS}/volumes/template_{{i}}.mrc", i=TEMPLATE_IDS),
    ]
