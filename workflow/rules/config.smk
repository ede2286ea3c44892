"""Config: config/config.yaml (the working directory's) with the command line's over it, checked by
cryoflow.workflow.configuration (schema defaults, files, cross-key rules). Included first: every other rule file
reads the checked config."""

import os
import sys
from pathlib import Path

# Rule scripts import the cryoflow package from src/ in whichever conda env
# they run; jobs on cluster nodes re-read this Snakefile and get the same. The
# Snakefile itself uses only cryoflow's standard-library modules. The workflow's
# folder is found from this file, not from the main Snakefile: used as a module,
# the main Snakefile is the user's.
WORKFLOW_ROOT = Path(str(workflow.current_basedir)).parents[1]
SRC = str(WORKFLOW_ROOT / "src")
_pythonpath = os.environ.get("PYTHONPATH", "")
if SRC not in _pythonpath.split(os.pathsep):
    os.environ.update(PYTHONPATH=os.pathsep.join(p for p in (SRC, _pythonpath) if p))
if SRC not in sys.path:
    sys.path.insert(0, SRC)

from cryoflow.errors import ConfigError  # noqa: E402
from cryoflow.workflow import configuration, modelcard, schema  # noqa: E402
from cryoflow.workflow import (
    resources as cluster,
)  # noqa: E402  (what a rule asks a cluster for)

# its YAML read first, so a syntax error names the file and line (Snakemake's message names neither)
if os.path.exists("config/config.yaml"):
    try:
        schema.read_config_file(os.path.abspath("config/config.yaml"))
    except ConfigError as err:
        raise WorkflowError(str(err))


configfile: "config/config.yaml"


try:
    configuration.load(config, workflow.config_settings.overwrite_config, WORKFLOW_ROOT)
    if not (
        workflow.remote_exec or workflow.subprocess_exec
    ):  # where the run starts, not inside its jobs
        configuration.check_launch(
            config["train"], workflow.local_exec, os.cpu_count(), os.environ
        )
        if not config["model"][
            "trained"
        ]:  # a model file of an earlier run that its card does not name
            modelcard.check_own_model(f"results/{config['model']['name']}/model")
except ConfigError as err:
    raise WorkflowError(str(err))
