"""cryoflow deployed the way Snakemake users deploy workflows: a project folder of their own that holds only its
config, running the workflow through a ``module`` directive from a path outside that folder. Every path the
workflow needs (its package, schemas, envs, scripts, report captions and bundled structure) must resolve
relative to the workflow, and every output must land under the project folder."""

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from workflow_helpers import SNAKEMAKE

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "config" / "tiny.yaml"


def files_under(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.is_file() and ".snakemake" not in p.parts}


def untracked_outputs() -> set[str]:
    """Files in the workflow's checkout that git does not track (results a run would have written there)."""
    status = subprocess.run(
        ["git", "status", "--porcelain", "--ignored", "--untracked-files=all", "--", "results", "logs", "benchmarks"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    return set(status.stdout.splitlines()) if status.returncode == 0 else set()


def project(folder: Path, module_snakefile: Path) -> Path:
    """A user's project: workflow/Snakefile with the module directive, config/config.yaml the tiny config with
    the paths exactly as the workflow's own config writes them (``resources/structures/4ake.pdb``)."""
    (folder / "workflow").mkdir(parents=True)
    (folder / "config").mkdir()
    (folder / "workflow" / "Snakefile").write_text(
        'configfile: "config/config.yaml"\n\n\n'
        "module cryoflow:\n"
        f'    snakefile:\n        "{module_snakefile}"\n'
        "    config:\n        config\n\n\n"
        "use rule * from cryoflow\n"
    )
    shutil.copy(TINY, folder / "config" / "config.yaml")
    return folder


@pytest.mark.slow
def test_the_tiny_workflow_runs_as_a_module_of_a_project_elsewhere(tmp_path):
    user = project(tmp_path / "myproject", ROOT / "Snakefile")
    assert not (user / "resources").exists() and not (user / "src").exists()
    before = untracked_outputs()
    run = subprocess.run([*SNAKEMAKE, "--cores", "2"], cwd=user, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-4000:]
    summary = user / "results" / "tiny" / "datasets" / "demo" / "report" / "summary.json"
    assert summary.is_file() and (user / "results" / "tiny" / "model" / "posterior.pt").is_file()
    assert (user / "logs" / "tiny" / "train.log").is_file()
    # the structure came from the workflow's resources/, read in place, never copied into the project
    assert not (user / "resources" / "structures").exists()
    written = {p.relative_to(user).parts[0] for p in files_under(user)}
    assert written <= {"workflow", "config", "results", "logs", "benchmarks"}, written
    assert untracked_outputs() == before, "the run wrote into the workflow's own folder"
    # a rerun from the same project has nothing to do
    rerun = subprocess.run([*SNAKEMAKE, "-n", "--cores", "2"], cwd=user, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0 and "Nothing to be done" in rerun.stdout + rerun.stderr, rerun.stdout[-2000:]


def test_snakedeploy_writes_a_project_that_builds_the_dag(tmp_path):
    """``snakedeploy deploy-workflow <path>``: the config and profiles copied into the project, a Snakefile with
    the module. (snakedeploy 0.17 writes a local source's Snakefile path relative to the source, which the
    project cannot resolve; docs/workflow.md says to make it absolute, as done here.)"""
    from snakedeploy.deploy import deploy

    dest = tmp_path / "deployed"
    deploy(str(ROOT), name="cryoflow", tag=None, branch="main", dest_path=dest)
    snakefile = dest / "workflow" / "Snakefile"
    text = snakefile.read_text()
    assert '"workflow/Snakefile"' in text and "use rule * from" in text, text
    snakefile.write_text(text.replace('"workflow/Snakefile"', f'"{ROOT / "workflow" / "Snakefile"}"'))
    assert (dest / "profiles" / "slurm" / "config.yaml").is_file() and (dest / "config" / "README.md").is_file()
    # the demo config as deployed (its structure named relative to the workflow), and the tiny one
    for config in (None, TINY):
        if config is not None:
            shutil.copy(config, dest / "config" / "config.yaml")
        dry = subprocess.run([*SNAKEMAKE, "-n", "--cores", "2"], cwd=dest, capture_output=True, text=True, timeout=300)
        assert dry.returncode == 0, dry.stderr[-3000:]
        name = yaml.safe_load((dest / "config" / "config.yaml").read_text())["model"]["name"]
        assert f"results/{name}/model/posterior.pt" in dry.stdout and "rule train:" in dry.stdout
        assert "rule report:" in dry.stdout  # the default target is the whole workflow
