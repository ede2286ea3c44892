"""The tiny config through Snakemake's SLURM executor, on a single-node SLURM cluster this test starts."""

import json
import re
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

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


class PluginJob:
    """What the SLURM executor reads of a job for its GPU arguments: the job's resources."""

    def __init__(self, **resources):
        self.resources = SimpleNamespace(**resources)
        self.resources.get = lambda key, default=None: resources.get(key, default)


@pytest.mark.parametrize(
    "device,gpus,expected",
    [("cuda", 4, " --gres=gpu:4"), ("auto", 1, " --gres=gpu:1"), ("cpu", 4, ""), ("auto", 0, "")],
)
def test_the_train_rule_asks_each_node_for_its_gpus(device, gpus, expected):
    """The executor's own code: a gres request is per node (torchrun starts train.gpus ranks on every node of
    train.nodes), never --gpus, the job's total; a CPU training asks for no GPU."""
    from snakemake_executor_plugin_slurm.utils import set_gres_string

    from cryoflow.workflow import resources

    gres = resources.gpus_per_node(device, gpus)
    assert set_gres_string(PluginJob(gres=gres)) == expected
    train = next(b for b in (ROOT / "workflow/rules/train.smk").read_text().split("\nrule ") if b.startswith("train:"))
    assert "gres=cluster.gpus_per_node(" in train and not re.search(r"\bgpu=", train)


def test_md_asks_for_one_gpu_and_a_budgeted_training_for_its_budget_and_a_margin():
    from cryoflow.workflow import resources

    assert resources.md_gpus("CUDA") == resources.md_gpus("auto") == "gpu:1" and resources.md_gpus("CPU") == ""
    templates = (ROOT / "workflow" / "rules" / "templates.smk").read_text()
    assert 'gres=cluster.md_gpus(config["templates"]["md"]["platform"])' in templates
    # train.max_hours counts inside the loop: the job's runtime leaves room for set-up, validation and the save
    assert resources.train_runtime_min(24) == 24 * 60 + resources.TRAIN_RUNTIME_MARGIN_MIN
    assert resources.train_runtime_min(None) == 24 * 60


def test_single_process_jobs_ask_for_one_gpu_or_none():
    """infer and pick: one GPU at most, none on the CPU; the rules that read validation.device or
    inference.device: a GPU where the key says cuda (they would fail on a CPU node), none for auto."""
    from snakemake_executor_plugin_slurm.utils import set_gres_string

    from cryoflow.workflow import resources

    assert [resources.job_gpus(d, 1) for d in ("auto", "cuda", "cpu")] == [1, 1, 0]
    assert [resources.gpu_if_cuda(d) for d in ("cuda", "cuda:1", "auto", "cpu")] == [1, 1, 0, 0]
    assert set_gres_string(PluginJob(gpu=resources.job_gpus("cuda", 1))) == " --gpus=1"
    assert set_gres_string(PluginJob(gpu=resources.job_gpus("cpu", 1))) == ""
    rules = "".join((ROOT / "workflow" / "rules" / f).read_text() for f in ("train.smk", "report.smk", "inference.smk"))
    for rule in ("validate", "likelihood_reference", "likelihood_agreement", "predictive_check", "whitening_check"):
        block = rules.split(f"\nrule {rule}:\n", 1)[1].split("\nrule ", 1)[0]
        assert "gpu=" in block and "cluster.gpu_if_cuda(" in block, rule


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
