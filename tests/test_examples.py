"""The paper's systems as example configs (config/examples/): each runs through the whole workflow at tiny size."""

import json

import pytest
import yaml
from workflow_helpers import ROOT, snakemake

EXAMPLES = {  # example → (structure file, beads the selection must give)
    "hsp90": ("2cg9.pdb", 609),
    "apoferritin": ("4v1w.cif", 4080),
    "hemagglutinin": ("3hmg.pdb", 1509),
}


def merged(*paths) -> dict:
    """Config files layered as Snakemake layers them: later files override earlier ones key by key."""

    def update(base, new):
        for key, value in new.items():
            if isinstance(value, dict) and isinstance(base.get(key), dict):
                update(base[key], value)
            else:
                base[key] = value
        return base

    out = {}
    for path in paths:
        update(out, yaml.safe_load(path.read_text()))
    return out


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_config_dry_runs_at_paper_and_cpu_size(tmp_path, name):
    """The example with the CPU overlay (and hsp90 with the production preset): a valid config and a full DAG."""
    example = ROOT / "config" / "examples" / f"{name}.yaml"
    overlays = [ROOT / "config" / "examples" / "cpu.yaml"]
    if name == "hsp90":
        overlays.append(ROOT / "config" / "production.yaml")
    for extra in overlays:
        cfg = merged(ROOT / "config" / "config.yaml", example, extra)
        cfg["structure"]["source"] = str(ROOT / cfg["structure"]["source"])
        configfile = tmp_path / "config.yaml"
        configfile.write_text(yaml.safe_dump(cfg, sort_keys=False))
        result = snakemake(tmp_path, configfile, "-n", "--cores", "1")
        assert result.returncode == 0, result.stderr[-3000:]
        assert f"results/{name}/model/posterior.pt" in result.stdout
        assert f"results/{name}/datasets/demo/report/summary.json" in result.stdout
        if extra.name == "cpu.yaml":  # the CPU overlay halves the paper's 128 px at 1.5 Å
            assert cfg["image"] == {"box_px": 64, "pixel_size_A": 3.0}
        else:
            assert cfg["image"] == {"box_px": 128, "pixel_size_A": 1.5} and cfg["train"]["steps"] == 150000


@pytest.mark.slow
@pytest.mark.parametrize("name", EXAMPLES)
def test_tiny_example_runs_end_to_end(tmp_path, name):
    """Each example's structure, template recipe and priors, with a tiny network: the model's stages run (the
    structure, its templates and maps, priors, training, validation). hsp90, the paper's main system, runs its
    demo dataset too; the dataset stages read only the model and the demo's own settings, which
    tests/config/tiny_example.yaml makes the same for every example."""
    source, n_beads = EXAMPLES[name]
    cfg = merged(
        ROOT / "config" / "config.yaml",
        ROOT / "config" / "examples" / f"{name}.yaml",
        ROOT / "tests" / "config" / "tiny_example.yaml",
    )
    assert cfg["structure"]["source"].endswith(source)
    cfg["structure"]["source"] = str(ROOT / cfg["structure"]["source"])
    configfile = tmp_path / "config.yaml"
    configfile.write_text(yaml.safe_dump(cfg, sort_keys=False))
    targets = [] if name == "hsp90" else [f"results/{name}/report/validation.json"]
    result = snakemake(tmp_path, configfile, "--cores", "2", *targets)
    assert result.returncode == 0, result.stderr[-5000:]
    model = tmp_path / "results" / name
    ensemble = json.loads((model / "model" / "card.json").read_text())
    assert ensemble["config"]["structure"]["source"] == cfg["structure"]["source"]
    templates_log = (tmp_path / "logs" / name / "templates.log").read_text()
    assert f"normal modes of {n_beads} CA" in templates_log
    assert ("sparse" if n_beads > 1000 else "dense") in templates_log
    assert "moves a few beads only" not in templates_log  # the example's modes are collective
    validation = json.loads((model / "report" / "validation.json").read_text())
    assert validation["n_simulations"] == cfg["validation"]["n_simulations"]
    if targets:
        return
    summary = json.loads((model / "datasets" / "demo" / "report" / "summary.json").read_text())
    assert summary["n_particles"] == 48
    for key in ("pearson_r", "coverage_90", "mmd2", "population", "states"):
        assert key in summary, key
