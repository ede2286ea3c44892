"""The Snakemake workflow: config validation, the DAG, and one end-to-end run of the tiny config."""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import mrcfile
import numpy as np
import pandas as pd
import pytest
import starfile
import yaml
from workflow_helpers import SNAKEMAKE, check_config, snakemake, write_config

import cryoflow
from cryoflow.errors import ConfigError
from cryoflow.workflow import configuration, schema
from cryoflow.workflow.modelcard import TRAIN_ADDED, with_added

ROOT = Path(__file__).resolve().parents[1]
MODEL_STAGES = ["structure", "templates", "volumes", "priors", "train", "validate", "likelihood_reference"]
MODEL_STAGES += ["model_report"]
DATASET_STAGES = ["demo_particles", "particle_noise", "particles", "infer", "gather_posteriors", "whitening_check"]
DATASET_STAGES += ["populations", "likelihood_agreement", "report"]
STAGES = MODEL_STAGES + DATASET_STAGES
SHARDED = {"particles", "infer"}  # one job, log and benchmark per shard
MODEL_DIR = Path("results/tiny")
DEMO_DIR = MODEL_DIR / "datasets" / "demo"


def test_dry_run_of_the_demo_lists_every_stage(tmp_path):
    # the explicit-likelihood stages are off in the demo: on here with every grid at the schema's default
    optional = {"validation.likelihood": {}, "report.likelihood": {"nuisance": ["ctf_known"]}}
    result = snakemake(tmp_path, write_config(tmp_path, "config/config.yaml", **optional), "-n", "--cores", "2")
    assert result.returncode == 0, result.stderr
    for stage in STAGES:
        assert f"rule {stage}:" in result.stdout, stage


def test_a_users_config_defines_exactly_its_datasets_and_a_project_folder_runs_with_directory(tmp_path, data_dir):
    """Snakemake merges --configfile into config/config.yaml; the demo's dataset must not ride along."""
    import shutil

    shutil.copy(data_dir / "relion31.mrcs", tmp_path)
    star = tmp_path / "relion31.star"
    star.write_text((data_dir / "relion31.star").read_text())
    (tmp_path / "config").mkdir()
    demo = write_config(tmp_path / "config", "config/config.yaml")  # the workflow's own config/config.yaml
    user = yaml.safe_load(demo.read_text())
    user["datasets"] = {"mine": {"star": str(star)}}
    (tmp_path / "my.yaml").write_text(yaml.safe_dump(user))
    result = snakemake(tmp_path, tmp_path / "my.yaml", "-n", "--cores", "1")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "results/demo/datasets/mine/" in result.stdout
    assert "rule demo_particles:" not in result.stdout and "datasets/demo/" not in result.stdout
    # the snakemake-workflows habit: a project folder with its own config/config.yaml, no --configfile
    (tmp_path / "config" / "config.yaml").write_text(yaml.safe_dump(user))
    cmd = [*SNAKEMAKE, "-s", str(ROOT / "Snakefile"), "--directory", str(tmp_path), "-n", "--cores", "1"]
    project = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert project.returncode == 0, project.stderr[-3000:]
    assert "results/demo/datasets/mine/" in project.stdout and "rule demo_particles:" not in project.stdout
    # a YAML syntax error in the project's config names the file and the line (Snakemake's names neither)
    (tmp_path / "config" / "config.yaml").write_text("seed: 1\nimage: {box_px: 32\n")
    broken = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert broken.returncode != 0
    output = broken.stdout + broken.stderr
    assert f"{tmp_path}/config/config.yaml, line 3, column 1: not valid YAML" in output, output[-2000:]


@pytest.mark.parametrize(
    "change,message",
    [
        ({"train.unknown_key": 3}, "train: Additional properties are not allowed ('unknown_key'"),
        ({"image.box_px": "big"}, "image.box_px: 'big' is not of type 'integer'"),
        ({"templates.n_templates": 1}, "templates.n_templates: 1 is less than the minimum of 2"),
        ({"structure.source": "/nonexistent/model.pdb"}, "structure.source: file '/nonexistent/model.pdb' not found"),
        ({"datasets.demo.demo": None}, "datasets.demo: give either star (your particles) or demo (synthetic)"),
        ({"datasets.extra.star": "/none/particles.star"}, "datasets.extra.star: file '/none/particles.star' not found"),
        ({"datasets.demo.particles": {"whiten": "yes"}}, "datasets.demo.particles.whiten: 'yes' is not of type"),
        ({"simulator.priors_from_dataset": "other"}, "simulator.priors_from_dataset: no dataset 'other'"),
        ({"templates.method": "ensemble"}, "templates.ensemble: give pdb_files or a trajectory"),
        (
            {"templates.method": "ensemble", "templates.ensemble": {"pdb_files": ["/none/*.pdb"]}},
            "templates.ensemble.pdb_files: no file matches '/none/*.pdb'",
        ),
        ({"datasets.demo.shards": 0}, "datasets.demo.shards: 0 is less than the minimum of 1"),
        ({"train.embedding.crop_px": 32}, "train.embedding.crop_px: 32 is not smaller than image.box_px (32)"),
        ({"train.embedding.crop_px": 15}, "train.embedding.crop_px: 15 is not a multiple of 2"),
        ({"templates.theta_dims": 3}, "templates.theta_dims: 3 is not one of [1, 2]"),
        (
            {"templates.theta_dims": 2},
            "datasets.demo.demo.populations.0.theta_A: give [θ1, θ2] when templates.theta_dims is 2",
        ),
        (
            {"templates.theta_dims": 2, "templates.method": "md"},
            "templates.theta_dims: 2 needs templates.method nma",
        ),
        # ranges are [low, high]; names never leave results/<model>/
        ({"simulator.snr_range": [1.0, 0.05]}, "simulator.snr_range: [1.0, 0.05] is reversed: a range is [low, high]"),
        ({"simulator.defocus_range_A": [20000, 5000]}, "simulator.defocus_range_A: [20000, 5000] is reversed"),
        ({"simulator.b_factor_range_A2": [100, 0]}, "simulator.b_factor_range_A2: [100, 0] is reversed"),
        ({"simulator.bead_sigma_A": [4.0, 2.0]}, "simulator.bead_sigma_A: [4.0, 2.0] is reversed"),
        ({"report.states": [[-6.0, -2.0], [6.0, 2.0]]}, "report.states.1: [6.0, 2.0] is reversed"),
        ({"model.name": ".."}, "model.name: '..' does not match"),
        ({"datasets.demo.datadir": "/none/stacks"}, "datasets.demo.datadir: folder '/none/stacks' not found"),
        # grids that cannot be right, against 4AKE chain A (its CA atoms span 59 Å)
        (
            {"image.box_px": 16, "image.pixel_size_A": 2.0},
            "image.box_px: 16 px × 2 Å = 32 Å is smaller than the structure",
        ),
        (
            {"image.box_px": 16, "image.pixel_size_A": 2.0},
            "its CA atoms span at least 59 Å); use box_px ≥ 30, or a larger pixel_size_A",
        ),
        ({"volumes.box_vox": 12}, "volumes.box_vox: 12 voxels × 4 Å = 48 Å is smaller than the structure"),
        ({"simulator.mask_radius_A": 64.0}, "simulator.mask_radius_A: 64 Å reaches the edge of the 128 Å training box"),
        ({"particles.mask_radius_A": 80.0}, "particles.mask_radius_A: 80 Å reaches the edge"),
        ({"templates.nma.max_rmsd_A": 40.0}, "templates.nma.max_rmsd_A: 40 Å is more than half the structure's size"),
        ({"simulator.voltage_kV": 30.0}, "simulator.voltage_kV: 30.0 is less than the minimum of 60"),
        ({"templates.nma.modes": [1, 700]}, "templates.nma.modes: mode 700 asked for, but"),
        # files that no rule makes are checked when the DAG is built
        ({"simulator.noise_power_tsv": "/none/noise.tsv"}, "simulator.noise_power_tsv: file '/none/noise.tsv' not"),
        (
            {"templates.method": "ensemble", "templates.ensemble": {"trajectory": "/none/md.dcd"}},
            "templates.ensemble.trajectory: file '/none/md.dcd' not found",
        ),
        (
            {
                "templates.method": "ensemble",
                "templates.ensemble": {"trajectory": __file__, "theta_tsv": "/none/t.tsv"},
            },
            "templates.ensemble.theta_tsv: file '/none/t.tsv' not found",
        ),
        (
            {"templates.method": "ensemble", "templates.ensemble": {"trajectory": __file__, "topology": "/none/t.pdb"}},
            "templates.ensemble.topology: file '/none/t.pdb' not found",
        ),
        ({"simulator.noise_power_tsv": __file__}, "has no column(s) frequency_per_A, noise_power (tab-separated"),
        ({"datasets": {"..": {"star": "x.star"}}}, "datasets: '..' does not match"),
        # inside a likelihood block (null or a block): the key, not the block
        ({"validation.likelihood.nuisance": "marginalized"}, "validation.likelihood.nuisance: 'marginalized' is not"),
        ({"validation.likelihood.n_images": 0}, "validation.likelihood.n_images: 0 is less than the minimum of 1"),
        (
            {"datasets.demo.report": {"likelihood": {"n_images": 0}}},
            "datasets.demo.report.likelihood.n_images: 0 is less than the minimum of 1",
        ),
    ],
)
def test_bad_config_is_refused_with_the_key_named(tmp_path, change, message):
    with pytest.raises(ConfigError) as refused:
        check_config(tmp_path, write_config(tmp_path, **change))
    assert message in str(refused.value)


@pytest.mark.parametrize(
    "change,message",
    [
        # the schema, through config.smk
        ({"image.box_px": "big"}, "image.box_px: 'big' is not of type 'integer'"),
        # a dataset's particles, through common.smk's input functions
        ({"datasets.demo.shards": 200}, "datasets.demo.shards: 200 shards but demo.n_particles is 96"),
    ],
)
def test_bad_config_stops_snakemake_before_any_job_with_the_key_named(tmp_path, change, message):
    result = snakemake(tmp_path, write_config(tmp_path, **change), "--cores", "1")
    assert result.returncode != 0
    assert message in result.stderr + result.stdout
    assert "Traceback" not in result.stderr + result.stdout
    assert not (tmp_path / "results").exists()


@pytest.mark.slow
def test_tiny_end_to_end_outputs(tiny_run):
    workdir, _ = tiny_run
    results, dataset = workdir / MODEL_DIR, workdir / DEMO_DIR
    summary = json.loads((dataset / "report" / "summary.json").read_text())
    for key in (
        "n_particles",
        "mmd2",
        "mmd_pvalue",
        "pearson_r",
        "median_abs_error_A",
        "coverage_90",
        "sbc_ks_pvalue",
        "coverage_error_max",
        "n_edge_posteriors",
        "inference_particles_per_s",
        "mmd2_raw",
        "mmd_pvalue_raw",
        "mmd2_whitened",
        "mmd_verdict",
        "contrast_correlation",
    ):
        assert key in summary
    # the dataset's report names the model it was inferred with; the demo's contrast matches the simulator's
    card_sha256 = hashlib.sha256((results / "model" / "card.json").read_bytes()).hexdigest()
    assert summary["model"]["name"] == "tiny" and summary["model"]["card_sha256"] == card_sha256
    assert summary["contrast_correlation"] > 0.3 and "contrast_warning" not in summary
    validation = json.loads((results / "report" / "validation.json").read_text())
    assert validation["sbc_ks_pvalue"] == summary["sbc_ks_pvalue"] and validation["n_simulations"] == 60
    assert [entry["snr"] for entry in validation["fixed_snr"]] == [0.1, 0.01]
    # the population estimate and its states: every particle of a state's STAR file is from the input
    assert abs(sum(state["weight"] for state in summary["population"]) - 1) < 1e-6
    states = pd.read_csv(dataset / "populations" / "states" / "states.tsv", sep="\t")
    assert len(states) == len(summary["states"]) >= 1
    first = starfile.read(dataset / "populations" / "states" / "state1.star", always_dict=True)["particles"]
    assert len(first) == states["n_particles"][0] and set(first["rlnImageName"]) <= set(
        starfile.read(dataset / "inference" / "posterior.star", always_dict=True)["particles"]["rlnImageName"]
    )
    assert all(entry["n"] == 50 and entry["p68_error_sample_A"] > 0 for entry in validation["fixed_snr"])
    # the explicit-likelihood reference on the first 4 images of each fixed-SNR set, both nuisance modes
    reference = validation["likelihood_reference"]
    assert [(e["nuisance"], e["snr"], e["n"]) for e in reference] == [
        (mode, snr, 4) for mode in ("marginalized", "ctf_known") for snr in (0.1, 0.01)
    ]
    for entry in reference:
        assert entry["exact_mean_std_A"] > 0 and entry["median_kl_exact_to_estimator"] >= 0
        assert entry["p68_ratio_estimator_to_exact"] > 0 and np.isfinite(entry["median_std_ratio"])
        assert np.isfinite(entry["excess_nll"]) and entry["excess_nll_se"] >= 0
    # the tiny model (40 steps) is far from the exact posterior at SNR 0.1, inside its prior: the report says so
    assert "nats per image at SNR 0.1" in validation["likelihood_verdict"], validation["likelihood_verdict"]
    exact = np.load(results / "validation" / "likelihood.npz")
    assert exact["log_likelihood"].shape == (16, 5) and np.all(np.isfinite(exact["log_likelihood"]))
    fixed = np.load(results / "validation" / "simulations.npz")
    # the same images as the validation's fixed-SNR sets: the first 4 of each, at the same θ
    np.testing.assert_allclose(exact["theta_true"][:4], fixed["fixed_snr_theta_true"][:4])
    np.testing.assert_allclose(exact["theta_true"][4:8], fixed["fixed_snr_theta_true"][50:54])
    agreement = json.loads((dataset / "report" / "likelihood.json").read_text())
    assert agreement["n_particles"] == 4 and agreement["likelihood_agreement"]["ctf_known"]["n"] == 4
    assert 0.0 <= summary["sbc_ks_pvalue"] <= 1.0
    card = json.loads((results / "model" / "card.json").read_text())
    assert card["steps_run"] == 40 and card["packages"]["torch"].startswith("2.13")
    assert card["cryoflow_version"] == cryoflow.__version__  # the release, in one place (src/cryoflow/__init__.py)
    assert len(card["checksums_sha256"]["ensemble"]) == 64 and card["seed"] == 2025
    assert (results / "model" / "posterior_last.pt").stat().st_size > 0
    assert summary["n_particles"] == 96
    assert 0.0 < summary["mmd_pvalue"] <= 1.0
    # the posterior STAR keeps the input columns and gains the posterior ones, row for row
    blocks = starfile.read(dataset / "inference" / "posterior.star", always_dict=True)
    assert list(blocks) == ["optics", "particles"]
    table = blocks["particles"]
    assert len(table) == 96
    assert {"rlnImageName", "rlnDefocusU", "cryoflowTrueThetaAngst"} <= set(table.columns)
    assert (table["cryoflowThetaQ05Angst"] <= table["cryoflowThetaQ50Angst"]).all()
    assert (table["cryoflowThetaQ50Angst"] <= table["cryoflowThetaQ95Angst"]).all()
    post = np.load(dataset / "inference" / "posterior.npz")
    assert post["latent"].shape == (96, 16) and post["latent"].dtype == np.float16
    assert post["samples"].shape == (96, 50) and post["shard_particles"].tolist() == [48, 48]
    assert len(post["shard_seconds"]) == 2 and post["theta_grid_range_A"].shape == (2,)
    np.testing.assert_allclose(post["mean"], table["cryoflowThetaMeanAngst"], atol=1e-5)
    # two shards, gathered in order: the second shard's first particle is particle 49
    shard = starfile.read(dataset / "inference" / "shard001.star", always_dict=True)["particles"]
    assert shard["rlnImageName"].iloc[0] == table["rlnImageName"].iloc[48]
    np.testing.assert_allclose(np.load(dataset / "inference" / "shard001.npz")["mean"], post["mean"][48:])
    with mrcfile.open(dataset / "particles" / "shard000.mrcs") as mrc:
        assert mrc.data.shape == (48, 32, 32) and mrc.voxel_size.x == pytest.approx(4.0)
    with mrcfile.open(results / "volumes" / "template_002.mrc") as mrc:
        assert mrc.voxel_size.x == pytest.approx(4.0) and mrc.data.shape == (24, 24, 24)
    theta = np.loadtxt(results / "templates" / "theta.tsv", skiprows=1, usecols=3)
    assert len(theta) == 5 and theta[2] == 0.0 and np.all(np.diff(theta) > 0)
    for stage in STAGES:
        name = f"{stage}/shard001" if stage in SHARDED else stage
        folder = "tiny" if stage in MODEL_STAGES else "tiny/datasets/demo"
        assert (workdir / "logs" / folder / f"{name}.log").stat().st_size > 0, stage
        assert (workdir / "benchmarks" / folder / f"{name}.tsv").is_file(), stage


@pytest.mark.slow
def test_tiny_2d_theta_end_to_end(tmp_path):
    """Two modes on a 5 × 5 template grid: every stage runs and writes θ₁ and θ₂ where 1-D writes θ."""
    populations = [
        {"theta_A": [-3.5, -2.0], "sd_A": 0.4, "weight": 0.7},
        {"theta_A": [3.0, 2.5], "sd_A": 0.4, "weight": 0.3},
    ]
    # the explicit likelihood (on in the tiny config) is 1-D only: off here
    changes = {
        "templates.theta_dims": 2,
        "datasets.demo.demo.populations": populations,
        "inference.grid_points_2d": 16,
        "validation.likelihood": None,
        "report.likelihood": None,
    }
    result = snakemake(tmp_path, write_config(tmp_path, **changes), "--cores", "2")
    assert result.returncode == 0, result.stderr[-5000:]
    results, dataset = tmp_path / MODEL_DIR, tmp_path / DEMO_DIR
    table = pd.read_csv(results / "templates" / "theta.tsv", sep="\t")
    assert list(table.columns) == ["template", "displacement_A", "theta1_A", "theta2_A"] and len(table) == 25
    assert len(list((results / "volumes").glob("template_*.mrc"))) == 25
    card = json.loads((results / "model" / "card.json").read_text())
    assert np.array(card["architecture"]["theta_range_A"]).shape == (2, 2)
    blocks = starfile.read(dataset / "inference" / "posterior.star", always_dict=True)
    particles = blocks["particles"]
    assert "cryoflowThetaMeanAngst" not in particles and "cryoflowThetaEdgeMass" in particles
    for d in (1, 2):
        assert {f"cryoflowTrueTheta{d}Angst", f"cryoflowTheta{d}StdAngst"} <= set(particles.columns)
        assert (particles[f"cryoflowTheta{d}Q05Angst"] <= particles[f"cryoflowTheta{d}Q95Angst"]).all()
    post = np.load(dataset / "inference" / "posterior.npz")
    assert post["mean"].shape == (96, 2) and post["samples"].shape == (96, 50, 2)
    np.testing.assert_allclose(post["mean"][:, 1], particles["cryoflowTheta2MeanAngst"], atol=1e-5)
    summary = json.loads((dataset / "report" / "summary.json").read_text())
    for key in ("pearson_r_theta1", "coverage_90_theta2", "coverage_error_max", "sbc_ks_pvalue", "mmd2"):
        assert key in summary
    assert summary["validation"]["sbc_ks_pvalue_theta2"] >= summary["sbc_ks_pvalue"]
    assert (dataset / "report" / "posterior_histograms.png").stat().st_size > 0


@pytest.mark.slow
def test_tiny_rerun_is_a_no_op_and_report_html_has_figures(tiny_run):
    workdir, configfile = tiny_run
    again = snakemake(workdir, configfile, "-n", "--cores", "1")
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr
    html = workdir / "report.html"
    result = snakemake(workdir, configfile, "--report", str(html), "--cores", "1")
    assert result.returncode == 0, result.stderr[-3000:]
    text = html.read_text(errors="replace")
    for figure in (
        "loss.png",
        "latent_umap.png",
        "calibration.png",
        "posterior_histograms.png",
        "whitening_mmd.png",
        "ensemble.png",
    ):
        assert figure in text, figure


def test_pdb_id_source_passes_the_config_check(tmp_path):
    """A PDB id is not a file; the dry run plans the fetch instead of stopping."""
    result = snakemake(tmp_path, write_config(tmp_path, **{"structure.source": "4AKE"}), "-n", "--cores", "1")
    assert result.returncode == 0, result.stderr
    assert "rule structure:" in result.stdout


def test_a_pdb_ids_grid_is_checked_once_its_entry_is_cached(tmp_path):
    """Before the first fetch a PDB id's size is unknown; once the structure job has cached the entry, a box
    too small for it is refused when the DAG is built, as for a local file."""
    changes = {
        "structure.source": "4AKE",
        "structure.format": "pdb",
        "structure.cache_dir": "cache",
        "image.box_px": 16,
        "image.pixel_size_A": 3.0,
        "simulator.mask_radius_A": 20.0,
        "particles.mask_radius_A": 20.0,
    }
    configfile = write_config(tmp_path, **changes)
    check_config(tmp_path, configfile)  # not cached: nothing to check against yet
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "4ake.pdb").write_bytes((ROOT / "resources/structures/4ake.pdb").read_bytes())
    with pytest.raises(ConfigError) as refused:
        check_config(tmp_path, configfile)
    assert "image.box_px: 16 px × 3 Å = 48 Å is smaller than the structure (4AKE (cache/4ake.pdb)" in str(refused.value)


@pytest.mark.slow
def test_map_projection_star_priors_and_coloured_noise_train(tmp_path):
    """The simulator options as a user sets them: maps from the volumes stage, CTF priors read from the
    particles' STAR file, and noise coloured like the particle stage's measured spectrum."""
    changes = {
        "simulator.projection": "volumes",
        "simulator.priors_from_dataset": "demo",
        "simulator.noise_power_tsv": "results/tiny/datasets/demo/particles/noise_power.tsv",
        "simulator.volume_oversample": 2,
        "datasets.demo.particles": {"whiten": False},
        "train.steps": 10,
    }
    configfile = write_config(tmp_path, **changes)
    target = "results/tiny/validation/simulations.npz"
    result = snakemake(tmp_path, configfile, "--cores", "2", target)
    assert result.returncode == 0, result.stderr[-5000:]
    results = tmp_path / "results" / "tiny"
    priors = json.loads((results / "model" / "priors.json").read_text())
    star = tmp_path / DEMO_DIR / "demo" / "Extract" / "job007" / "particles.star"
    demo = starfile.read(star, always_dict=True)["particles"]
    defocus = 0.5 * (demo["rlnDefocusU"] + demo["rlnDefocusV"])
    assert priors["defocus_range_A"] == pytest.approx([defocus.min(), defocus.max()])
    assert priors["optics"] == [{"voltage_kV": 300.0, "cs_mm": 2.7, "amplitude_contrast": 0.1, "weight": 96}]
    log = (tmp_path / "logs" / "tiny" / "priors.log").read_text()
    assert "defocus_range_A" in log and "pixel_sizes_A" in log
    validation = np.load(results / "validation" / "simulations.npz")
    assert np.all(np.isfinite(validation["images"]))


@pytest.fixture()
def user_dataset(tiny_run):
    """The tiny demo's particles, as a user's RELION project would hold them."""
    return tiny_run[0] / DEMO_DIR / "demo"


@pytest.mark.slow
def test_a_missing_stack_stops_the_dry_run_naming_the_star_file_and_the_stack(tmp_path, user_dataset):
    import shutil

    project = tmp_path / "relion"
    shutil.copytree(user_dataset, project)
    stack = next((project / "Extract" / "job007" / "Movies").glob("*.mrcs"))
    stack.rename(stack.with_suffix(".moved"))  # a stack the STAR file names is missing
    star = project / "Extract" / "job007" / "particles.star"
    configfile = write_config(tmp_path, **{"datasets.user.star": str(star)})
    result = snakemake(tmp_path, configfile, "-n", "--cores", "1")
    assert result.returncode != 0
    text = result.stdout + result.stderr
    assert f"datasets.user: {star}: stack 'Extract/job007/Movies/{stack.name}' in _rlnImageName not found" in text
    assert not (tmp_path / "results").exists()


@pytest.mark.slow
def test_a_job_killed_mid_write_leaves_no_output_and_the_rerun_completes(tmp_path):
    import os
    import signal
    import time

    # on 2 data-parallel ranks (train.processes): torchrun's ranks die with the job and resume together
    configfile = write_config(tmp_path, **{"train.steps": 400, "train.checkpoint_every": 20, "train.processes": 2})
    cmd = [
        *SNAKEMAKE,
        "-s",
        str(ROOT / "Snakefile"),
        "--directory",
        str(tmp_path),
        "--configfile",
        str(configfile),
        "--cores",
        "2",
        "results/tiny/model/posterior.pt",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    checkpoint = tmp_path / "results" / "tiny" / "checkpoints" / "train.pt"
    deadline = time.monotonic() + 600
    while not checkpoint.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)  # snakemake and the training job, mid-run
    proc.wait()
    model = tmp_path / "results" / "tiny" / "model"
    assert checkpoint.exists(), "training finished or never started before the kill"
    assert not (model / "posterior.pt").exists() and not (model / "card.json").exists()
    assert snakemake(tmp_path, configfile, "--unlock").returncode == 0  # a killed run leaves Snakemake's lock
    result = snakemake(tmp_path, configfile, "--cores", "2", "--rerun-incomplete", "results/tiny/model/posterior.pt")
    assert result.returncode == 0, result.stderr[-3000:]
    import torch

    payload = torch.load(model / "posterior.pt", weights_only=True)
    assert payload["format"] == "cryoflow-posterior-v1"
    log = (tmp_path / "logs" / "tiny" / "train.log").read_text()
    assert "resuming from checkpoint" in log and "data-parallel training on 2 ranks" in log


def test_a_script_error_reaches_the_rule_log(tmp_path):
    script = "from cryoflow.errors import InputError\nfrom cryoflow.logs import configure\n"
    script += f"configure({str(tmp_path / 'rule.log')!r})\nraise InputError('x.star, particle 3: _rlnImageName bad')\n"
    env = {"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
    assert result.returncode == 1 and "InputError: x.star, particle 3: _rlnImageName bad\n" in result.stderr
    assert "Traceback" not in result.stderr  # the message alone on the console (no chained tracebacks)
    log = (tmp_path / "rule.log").read_text()
    message = "ERROR cryoflow: InputError: x.star, particle 3: _rlnImageName bad"
    assert message in log and "Traceback" in log.split(message, 1)[1]  # the traceback stays in the log


@pytest.mark.slow
def test_user_ensemble_templates_give_the_same_artefacts(tmp_path):
    """templates.method: ensemble, from a folder of PDB files: θ table, template PDBs and maps as with NMA."""
    from cryoflow.ensemble import templates
    from cryoflow.io import structure

    atoms = structure.select_atoms(structure.load_structure(ROOT / "resources/structures/4ake.pdb"), ["A"], "CA")
    mode = templates.anm_modes(atoms.getCoords(), 1, 15.0, 1.0)[0]
    (tmp_path / "models").mkdir()
    for i, amplitude in enumerate(np.linspace(0.0, 4.0, 9)):
        structure.write_pdb(tmp_path / "models" / f"m{i}.pdb", atoms, atoms.getCoords() + amplitude * 14.6 * mode)
    changes = {"templates.method": "ensemble", "templates.ensemble": {"pdb_files": [str(tmp_path / "models/*.pdb")]}}
    configfile = write_config(tmp_path, **changes)
    targets = ["results/tiny/templates/theta.tsv", "results/tiny/volumes/template_004.mrc"]
    result = snakemake(tmp_path, configfile, "--cores", "2", *targets)
    assert result.returncode == 0, result.stderr[-3000:]
    theta = np.loadtxt(tmp_path / targets[0], skiprows=1, usecols=3)
    np.testing.assert_allclose(theta, np.linspace(0.0, 4.0, 5), atol=0.05)  # RMSD of the picked models
    log = (tmp_path / "logs" / "tiny" / "templates.log").read_text()
    assert "template 004: m8.pdb" in log


@pytest.mark.slow
def test_md_templates_run_through_the_workflow(tmp_path):
    """templates.method: md: PDBFixer + a short OpenMM run on the CPU, then the usual template artefacts.

    A 30-residue fragment keeps GBn2 on the CPU (a custom force there, slow) to seconds.
    """
    import prody

    from cryoflow.io import structure

    atoms = structure.load_structure(ROOT / "resources/structures/4ake.pdb")
    prody.writePDB(str(tmp_path / "fragment.pdb"), atoms.select("chain A and resnum 1 to 30"))
    md = {
        "minimize_iterations": 20,
        "equilibration_ps": 0.02,
        "production_ps": 0.4,
        "frame_interval_ps": 0.02,
        "platform": "CPU",
    }
    changes = {
        "structure.source": str(tmp_path / "fragment.pdb"),
        "templates.method": "md",
        "templates.md": md,
        "templates.n_templates": 3,
        "train.gpus": 0,
        "templates.distance_selections": ["resnum 1 to 5", "resnum 25 to 30"],
    }
    configfile = write_config(tmp_path, **changes)
    targets = ["results/tiny/templates/ensemble.npz", "results/tiny/volumes/template_002.mrc"]
    result = snakemake(tmp_path, configfile, "--cores", "2", *targets)
    assert result.returncode == 0, result.stderr[-3000:]
    log = (tmp_path / "logs" / "tiny" / "md.log").read_text()
    assert "on platform CPU" in log and "20 frames" in log
    ensemble = np.load(tmp_path / targets[0])
    assert ensemble["coords_A"].shape == (3, 30, 3) and np.all(np.diff(ensemble["theta_A"]) > 0)
    templates_log = (tmp_path / "logs" / "tiny" / "templates.log").read_text()
    assert "θ = distance between resnum 1 to 5 and resnum 25 to 30" in templates_log


def test_the_production_preset_layers_on_a_config(tmp_path):
    """config/production.yaml on top of the demo: the paper's network, the rest of the demo kept."""
    configfile = write_config(tmp_path, "config/config.yaml", **{"model.name": "demo_production"})
    result = snakemake(
        tmp_path,
        configfile,
        "-n",
        "--cores",
        "1",
        "--configfile",
        str(configfile),
        str(ROOT / "config" / "production.yaml"),
        "--printshellcmds",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "results/demo_production/model/posterior.pt" in result.stdout
    assert "rule likelihood_reference:" in result.stdout  # the preset measures the estimator against the likelihood
    preset = yaml.safe_load((ROOT / "config" / "production.yaml").read_text())
    assert preset["train"]["embedding"] == {"latent_dim": 256, "width": 64}
    assert preset["train"]["flow"]["hidden_features"] == [256] * 10 + [128, 64]
    assert set(preset) <= {"train", "validation", "inference"}


def test_train_keys_left_out_of_the_train_rule_are_the_schemas_defaults():
    """A key added to ``train`` after models were trained stays out of the train rule's params at the value
    those models had (no retraining on an upgrade); that value must be the schema's default, or a config that
    leaves the key out would train with one value and record another."""
    train = schema.full_schema()["properties"]["train"]["properties"]

    def default(dotted):
        node = {"properties": train}
        for key in dotted.split("."):
            node = node["properties"][key]
        return node["default"]

    assert TRAIN_ADDED == {key: default(key) for key in TRAIN_ADDED}
    # a config at the defaults gives the train rule none of them, and the train job puts them back
    full = schema.validate(yaml.safe_load((ROOT / "tests" / "config" / "tiny.yaml").read_text()))["train"]
    params = configuration.train_params(full)
    assert "crop_px" not in params["embedding"] and "condition_on_ctf" not in params
    assert with_added(params) == full


@pytest.mark.parametrize(
    "section,shared,override",
    [
        ("particles", {"noise_images": 50, "chunk_size": 32}, {"whiten": False}),
        ("inference", {"batch_size": 32, "grid_points": 64}, {"n_samples": 7}),
        ("report", {"mmd_permutations": 50, "umap_neighbors": 5}, {"n_example_particles": 2}),
        ("report.likelihood", {"n_images": 4, "nuisance": ["ctf_known"], "refine_top": 4}, {"shift_points": 2}),
    ],
)
def test_a_datasets_override_of_one_key_keeps_the_shared_value_of_every_other(tmp_path, section, shared, override):
    """A dataset's section overrides only the keys it names: the schema fills no default into it before
    the shared section is merged under it (a reference to a definition included)."""
    path = section.split(".")
    block = {path[-1]: override}
    for key in reversed(path[:-1]):
        block = {key: block}
    configfile = write_config(tmp_path, **{f"datasets.demo.{path[0]}": block[path[0]]})
    cfg = check_config(tmp_path, configfile)
    node = configuration.dataset_settings(cfg, "demo")
    for key in path:
        node = node[key]
    assert {key: node[key] for key in shared} == shared
    assert {key: node[key] for key in override} == override


def test_a_micrograph_sets_override_of_one_key_keeps_the_shared_value_of_every_other(tmp_path):
    from test_micrographs import TINY_SET

    mset = {**TINY_SET, "picking": {"stride_px": 3}}
    picking = {"batch_size": 8, "grid_points": 32}
    configfile = write_config(tmp_path, micrographs={"m": mset}, picking=picking)
    settings = configuration.micrograph_settings(check_config(tmp_path, configfile), "m")["picking"]
    assert (settings["batch_size"], settings["grid_points"], settings["stride_px"]) == (8, 32, 3)
