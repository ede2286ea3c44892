import shutil
import sys
from pathlib import Path

import pytest
from jaxtyping import install_import_hook

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
# the annotations of these modules, array shapes (jaxtyping) included, are checked at every call in the suite
SHAPE_CHECKED = (
    "cryoflow.physics.ctf",
    "cryoflow.physics.projection",
    "cryoflow.physics.simulator",
    "cryoflow.physics.whitening",
)
install_import_hook(SHAPE_CHECKED, "shape_check.check")
DATA = ROOT / "tests" / "data"
SHARED = ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def root():
    return ROOT


@pytest.fixture(scope="session")
def data_dir():
    return DATA


@pytest.fixture(scope="session")
def adk_ca():
    """4AKE chain A as CA beads (214 residues)."""
    from cryoflow.io import structure

    return structure.select_atoms(structure.load_structure(ROOT / "resources/structures/4ake.pdb"), ["A"], "CA")


@pytest.fixture()
def relion_job(tmp_path, data_dir):
    """The shared RELION 3.1 sample laid out as a real job folder: project/Extract/job133/..."""
    job = tmp_path / "project" / "Extract" / "job133"
    (job / "Micrographs").mkdir(parents=True)
    shutil.copy(data_dir / "relion31.mrcs", job / "Micrographs" / "relion31.mrcs")
    text = (data_dir / "relion31.star").read_text()
    (job / "particles.star").write_text(text.replace("@relion31.mrcs", "@Extract/job133/Micrographs/relion31.mrcs"))
    return job / "particles.star"


def schema_defaults(*section: str) -> dict:
    """The schema's defaults of one config section, e.g. ``schema_defaults("templates", "md")``."""
    import yaml

    node = yaml.safe_load((ROOT / "workflow" / "schemas" / "config.schema.yaml").read_text())
    for key in section:
        node = node["properties"][key]
    return {key: value["default"] for key, value in node["properties"].items() if "default" in value}


def train_settings(**overrides):
    """A TrainingConfig with the schema's train defaults (seed 0), ``overrides`` on top."""
    import dataclasses

    from cryoflow.sbi import training

    fields = {f.name for f in dataclasses.fields(training.TrainingConfig)}
    values = {k: v for k, v in schema_defaults("train").items() if k in fields}
    return training.TrainingConfig(**{**values, "seed": 0, **overrides})


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """The tiny config run to completion once (model and demo dataset): (work folder, config file).

    Tests that change files in it work on a copy."""
    from workflow_helpers import snakemake, write_config

    workdir = tmp_path_factory.mktemp("tiny")
    configfile = write_config(workdir)
    result = snakemake(workdir, configfile, "--cores", "2")
    assert result.returncode == 0, result.stderr[-5000:]
    return workdir, configfile


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items):
    """Under ``pytest -n 2 --dist loadgroup`` (pytest-xdist), tests that share an expensive fixture share a
    worker, so it is built once: those that read the session's tiny run in one group, and every other test
    with the rest of its module (module fixtures train models)."""
    for item in items:
        shared = "tiny_run" in getattr(item, "fixturenames", ())
        item.add_marker(pytest.mark.xdist_group("tiny_run" if shared else item.module.__name__))


FUZZER = []  # the fuzzer's report property, collected from whichever process ran it


def pytest_runtest_logreport(report):
    if report.when == "call":
        FUZZER.extend(value for name, value in report.user_properties if name == "fuzzer")


def pytest_terminal_summary(terminalreporter):
    """The fuzzer's cases and outcomes, when it ran (tests/test_fuzz.py)."""
    if not FUZZER:
        return
    seed, results = FUZZER[0]["seed"], {tuple(row[:3]): row[3] for row in FUZZER[0]["outcomes"]}
    write = terminalreporter.write_line
    terminalreporter.section("particle reader fuzzer")
    totals = {}
    for (_, _, outcome), n in sorted(results.items()):
        totals[outcome] = totals.get(outcome, 0) + n
    write(f"{sum(totals.values())} cases (seed {seed}): " + ", ".join(f"{n} {o}" for o, n in totals.items()))
    for target in ("star", "cs", "mrcs"):
        rows = {(k, o): n for (t, k, o), n in results.items() if t == target}
        kinds = sorted({k for k, _ in rows})
        parts = [f"{k} " + "/".join(str(rows.get((k, o), 0)) for o in ("agrees", "lenient", "stopped")) for k in kinds]
        write(f"  {target} (agrees/lenient/stopped): " + ", ".join(parts))
