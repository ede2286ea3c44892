"""Running the workflow from tests: configs with dotted-key changes, Snakemake in a work folder, job counts."""

import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def write_config(tmp_path: Path, base: str = "tests/config/tiny.yaml", name="config.yaml", **changes) -> Path:
    """A config file in tmp_path based on ``base``, with absolute input paths and dotted-key changes
    (a value of None removes the key)."""
    cfg = yaml.safe_load((ROOT / base).read_text())
    cfg["structure"]["source"] = str(ROOT / cfg["structure"]["source"])
    for dotted, value in changes.items():
        *parents, leaf = dotted.split(".")
        node = cfg
        for key in parents:
            node = node.setdefault(key, {})
        if value is None:
            node.pop(leaf, None)
        else:
            node[leaf] = value
    path = tmp_path / name
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def snakemake(tmp_path: Path, configfile: Path, *args, timeout=900):
    cmd = [*SNAKEMAKE, "-s", str(ROOT / "Snakefile"), "--directory", str(tmp_path), "--configfile", str(configfile)]
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=timeout)


def job_stats(output: str) -> dict[str, int]:
    """Rule → job count from Snakemake's own 'Job stats' table of a run."""
    lines = output.split("Job stats:", 1)[1].splitlines()
    counts = {}
    for line in lines[3:]:
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit() or parts[0] == "total":
            break
        counts[parts[0]] = int(parts[1])
    return counts


def check_config(workdir: Path, configfile: Path) -> dict:
    """What the DAG side checks before any job, in this process, as ``snakemake --directory workdir
    --configfile configfile -n`` does it: config/config.yaml (the work folder's, else the repository's) with
    the file merged over it, then each dataset's particles and each micrograph set's files. Raises
    ConfigError; returns the checked config. Paths in the config are read relative to ``workdir``."""
    import contextlib

    from snakemake.utils import update_config

    from cryoflow.workflow import configuration

    base = workdir / "config" / "config.yaml"
    cfg = yaml.safe_load((base if base.is_file() else ROOT / "config" / "config.yaml").read_text())
    given = yaml.safe_load(configfile.read_text())
    update_config(cfg, given)
    with contextlib.chdir(workdir):
        configuration.load(cfg, given)
        for name in cfg["datasets"]:
            settings = configuration.dataset_settings(cfg, name)
            index = configuration.dataset_index(name, settings, cfg)
            if index is not None:
                configuration.resolved_stacks(name, settings, index, cfg["image"]["pixel_size_A"])
        for name in cfg["micrographs"]:
            configuration.micrograph_files(name, configuration.micrograph_settings(cfg, name))
    return cfg


def check_result_group(path: Path, n_items: int) -> dict:
    """A ``.csg`` as cryoSPARC's Import Result Group reads it: a particle group whose every result names a
    ``.cs`` beside it (``>name``) holding that slot's fields for ``n_items`` rows; every slot of that file
    listed. Returns the group."""
    import numpy as np

    group = yaml.safe_load(path.read_text())
    assert group["group"]["type"] == "particle" and group["group"]["name"] == "particles"
    results = group["results"]
    for slot, result in results.items():
        assert result["metafile"].startswith(">") and result["type"] == f"particle.{slot}"
        assert result["num_items"] == n_items
        fields = np.load(path.parent / result["metafile"][1:]).dtype.names
        assert len(fields) > 0 and any(f.startswith(f"{slot}/") for f in fields), (slot, fields)
        assert {f.split("/")[0] for f in fields if "/" in f} == set(results)
    return group
