"""The tiny config through Snakemake's SLURM executor, on a single-node SLURM cluster this test starts."""

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from slurm_cluster import SlurmCluster, unavailable_reason
from workflow_helpers import job_stats, snakemake, write_config

ROOT = Path(__file__).resolve().parents[1]
REASON = unavailable_reason()
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    if REASON:
        pytest.skip(REASON)
    running = SlurmCluster(tmp_path_factory.mktemp("slurm"))
    try:
        yield running.start()
    finally:
        running.stop()


def test_slurm_profile_is_the_plugins_and_asks_gpus_for_train_and_infer():
    profile = yaml.safe_load((ROOT / "profiles" / "slurm" / "config.yaml").read_text())
    assert profile["executor"] == "slurm" and profile["slurm-status-command"] == "squeue"
    assert profile["use-conda"] and profile["rerun-incomplete"]
    assert {"runtime", "mem_mb", "slurm_partition"} <= set(profile["default-resources"])
    assert profile["set-resources"]["train"]["slurm_partition"] == profile["set-resources"]["infer"]["slurm_partition"]
    # every rule that takes a whole machine locally (threads: all_cores()) has its cores set on a cluster,
    # where it would otherwise ask for more than a node may have and wait forever
    whole_machine = set()
    for smk in (ROOT / "workflow" / "rules").glob("*.smk"):
        for block in smk.read_text().split("\nrule ")[1:]:
            if "threads: all_cores()" in block:
                whole_machine.add(block.split(":", 1)[0].strip())
    assert whole_machine and whole_machine <= set(profile["set-threads"]), whole_machine - set(profile["set-threads"])
    local = yaml.safe_load((ROOT / "profiles" / "local" / "config.yaml").read_text())
    assert local["cores"] == "all" and local["use-conda"]


def test_tiny_config_runs_through_the_slurm_executor(cluster, tiny_run, tmp_path):
    """A copy of the session's finished tiny run, told to train on 2 CPU ranks: training, inference per shard
    and the gathered posteriors rerun, each through sbatch (the particle stage, which the model does not touch,
    stays done)."""
    work = tmp_path / "work"
    shutil.copytree(tiny_run[0], work, symlinks=True)
    profile = yaml.safe_load((ROOT / "profiles" / "slurm" / "config.yaml").read_text())
    del profile["use-conda"]  # no conda channels here; tests/test_envs.py checks the env files statically
    profile.update(
        {
            "latency-wait": 5,
            "jobs": 4,
            "slurm-keep-successful-logs": True,
            "slurm-init-seconds-before-status-checks": 1,
            "seconds-between-status-checks": 2,
        }
    )
    profile["set-threads"] = {rule: 1 for rule in profile["set-threads"]}
    profile["default-resources"]["mem_mb"] = 1500
    (tmp_path / "profile").mkdir()
    (tmp_path / "profile" / "config.yaml").write_text(yaml.safe_dump(profile))
    # train on 2 data-parallel gloo ranks inside its SLURM job (train.processes), as a GPU node runs one per GPU
    configfile = write_config(work, name="slurm.yaml", **{"train.gpus": 0, "inference.gpus": 0, "train.processes": 2})
    # the GPU rules and a CPU rule after them: each SLURM job costs seconds of scheduling, so not the whole report
    target = "results/tiny/datasets/demo/inference/posterior.star"
    result = snakemake(work, configfile, "--profile", str(tmp_path / "profile"), target, timeout=1500)
    assert result.returncode == 0, result.stderr[-6000:]
    ran = job_stats(result.stdout + result.stderr)
    assert ran == {"train": 1, "infer": 2, "gather_posteriors": 1}, ran
    # every job went through sbatch: the plugin keeps one SLURM log per job, by rule
    logs = work / ".snakemake" / "slurm_logs"
    via_slurm = {p.name.removeprefix("rule_") for p in logs.iterdir()}
    assert via_slurm == set(ran), (via_slurm, ran)
    assert len(list((logs / "rule_infer").rglob("*.log"))) == 2  # one job per shard
    train_log = (work / "logs" / "tiny" / "train.log").read_text()
    assert "data-parallel training on 2 ranks" in train_log and "[rank 0]" in train_log
    assert json.loads((work / "results" / "tiny" / "model" / "card.json").read_text())["world_size"] == 2
    jobs = subprocess.run(["squeue", "-h", "-t", "all", "-o", "%P %T %k"], capture_output=True, text=True).stdout
    partitions = {line.split()[0] for line in jobs.splitlines()}
    assert partitions == {"cpu", "gpu"}, jobs
    assert all(line.split()[1] == "COMPLETED" for line in jobs.splitlines()), jobs
