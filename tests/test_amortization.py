"""Train once, infer many: a model shared by datasets, reruns limited to what an edit changes, models
brought from elsewhere, and particle stacks as inputs of exactly the jobs that read them."""

import json
import shutil
from pathlib import Path

import mrcfile
import numpy as np
import pytest
from workflow_helpers import check_result_group, job_stats, snakemake, write_config

from cryoflow.io import particles, starindex
from cryoflow.io.star import write_star

SEED = 2025  # tests/config/tiny.yaml
DEMO_STAR = Path("results/tiny/datasets/demo/demo/Extract/job007/particles.star")
MODEL_CHAIN = {"train": 1, "validate": 1, "likelihood_reference": 1, "model_report": 1}
# what follows the gathered posteriors: the population, the posterior-predictive check, the explicit likelihood's
# agreement, the report
AFTER_GATHER = {"gather_posteriors": 1, "populations": 1, "predictive_check": 1, "likelihood_agreement": 1, "report": 1}
DEMO_CHAIN = {"particle_noise": 1, "particles": 2, "whitening_check": 1, "infer": 2, **AFTER_GATHER}


def planned(workdir, configfile) -> dict:
    """Jobs a dry run plans, by rule (the 'all' target left out)."""
    result = snakemake(workdir, configfile, "-n", "--cores", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    text = result.stdout + result.stderr
    if "Nothing to be done" in text:
        return {}
    return {rule: n for rule, n in job_stats(text).items() if rule != "all"}


RERUNS = [
    ({"report.umap_neighbors": 6}, {"report": 1}),
    ({"datasets.demo.report": {"umap_neighbors": 6}}, {"report": 1}),
    ({"report.mmd_max_points": 50}, {"whitening_check": 1, "predictive_check": 1, "report": 1}),
    ({"report.state_min_mass": 0.8}, {"populations": 1, "report": 1}),
    ({"inference.n_samples": 40}, {"infer": 2, **AFTER_GATHER}),
    ({"datasets.demo.inference": {"grid_points": 48}}, {"infer": 2, **AFTER_GATHER}),
    ({"particles.whiten": False}, {"particles": 2, "infer": 2, **AFTER_GATHER}),
    ({"datasets.demo.shards": 3}, {"particles": 3, "infer": 3, **AFTER_GATHER}),
    ({"validation.n_simulations": 50}, {"validate": 1, "model_report": 1, "report": 1}),
    ({"validation.likelihood.refine_levels": 1}, {"likelihood_reference": 1, "model_report": 1, "report": 1}),
    ({"report.likelihood.n_images": 3}, {"likelihood_agreement": 1}),
    ({"train.steps": 30}, {**MODEL_CHAIN, "infer": 2, "whitening_check": 1, **AFTER_GATHER}),
    ({"datasets.demo.demo.n_particles": 80}, {"demo_particles": 1, **DEMO_CHAIN}),
    ({"simulator.snr_range": [0.1, 1.0]}, {"priors": 1, **MODEL_CHAIN, "demo_particles": 1, **DEMO_CHAIN}),
    ({"templates.n_templates": 7}, None),  # everything from the templates on
]


@pytest.mark.slow
@pytest.mark.parametrize("change,expected", RERUNS, ids=[next(iter(c)) for c, _ in RERUNS])
def test_an_edit_reruns_exactly_the_jobs_that_read_it(tiny_run, change, expected):
    workdir, _ = tiny_run
    name = "rerun-" + "-".join(change).replace(".", "_") + ".yaml"
    jobs = planned(workdir, write_config(workdir, name=name, **change))
    if expected is None:
        assert {"templates", "volumes", "train", "demo_particles", "report"} <= set(jobs)
        assert "structure" not in jobs
    else:
        assert jobs == expected


def restack(star: Path, folder: Path, per_stack: int, corrupt: str | None = None, only: str | None = None) -> Path:
    """The particles of ``star`` rewritten into stacks of ``per_stack`` images under ``folder`` (a RELION
    job folder) with their STAR file, one stack's images sign-flipped when ``corrupt`` names it; with
    ``only``, that stack alone is written."""
    found = particles.load_particles(star)
    source = particles.ParticleSource(found.table, star)
    images = source.read(np.arange(len(source)))
    (folder / "Stacks").mkdir(parents=True, exist_ok=True)
    names = []
    for k, start in enumerate(range(0, len(images), per_stack)):
        stack = f"Stacks/s{k:02d}.mrcs"
        data = images[start : start + per_stack]
        names += [f"{i + 1:06d}@{folder.parent.name}/{folder.name}/{stack}" for i in range(len(data))]
        if only is not None and stack != only:
            continue
        with mrcfile.new(folder / stack, overwrite=True) as mrc:
            mrc.set_data(-data if stack == corrupt else data)
            mrc.voxel_size = float(found.table["pixel_size_A"].iloc[0])
    if only is not None:
        return folder / "particles.star"
    blocks = found.blocks
    blocks[found.block_name] = blocks[found.block_name].assign(rlnImageName=names)
    write_star(folder / "particles.star", blocks, found.version)
    return folder / "particles.star"


@pytest.mark.slow
def test_new_datasets_reuse_the_model_and_a_fixed_stack_reruns_only_its_shard(tiny_run, tmp_path):
    work = tmp_path / "work"
    shutil.copytree(tiny_run[0], work, symlinks=True)
    job = tmp_path / "relion" / "Extract" / "job010"
    star = restack(work / DEMO_STAR, job, per_stack=4)
    user = {"star": str(star), "shards": 2, "particles": {"noise_images": 4}, "report": {"mmd_max_points": 10}}
    # a stack no job but its shard's reads: outside the noise sample and the whitening subset
    index = starindex.index_star(star)
    noise = starindex.noise_rows(index.groups, 4, SEED)
    used = set(index.stacks(sorted({r for rows in noise.values() for r in rows})))
    used |= set(index.stacks(starindex.sample_rows(len(index), 10, SEED)))
    free = [s for s in index.stacks() if s not in used]
    assert free, "every stack is sampled; use smaller stacks"
    corrupt = free[0].split("/", 2)[2]
    restack(work / DEMO_STAR, job, per_stack=4, corrupt=corrupt)  # a bad stack the first run reads

    config = write_config(work, name="two.yaml", **{"datasets.user": user})
    assert planned(work, config) == DEMO_CHAIN  # the new dataset only: no training, the demo untouched
    first = snakemake(work, config, "--cores", "2")
    assert first.returncode == 0, first.stderr[-3000:]
    assert "train" not in job_stats(first.stdout + first.stderr)
    summary = json.loads((work / "results/tiny/datasets/user/report/summary.json").read_text())
    assert summary["n_particles"] == 96 and summary["model"]["name"] == "tiny"

    restack(work / DEMO_STAR, job, per_stack=4, only=corrupt)  # the user fixes the stack
    second = snakemake(work, config, "--cores", "2")
    assert second.returncode == 0, second.stderr[-3000:]
    ran = job_stats(second.stdout + second.stderr)
    assert ran == {"particles": 1, "infer": 1, **AFTER_GATHER, "all": 1}, ran

    moved = tmp_path / "elsewhere" / "Extract" / "job010"
    shutil.copytree(job, moved)
    again = write_config(work, name="moved.yaml", **{"datasets.user": {**user, "star": str(moved / "particles.star")}})
    assert planned(work, again) == DEMO_CHAIN  # the dataset's STAR file changed: its chain alone

    # particles extracted without contrast inversion: flipped by the dataset's contrast, and the report
    # notices particles whose contrast is opposite to the simulations'
    flipped = write_config(
        work,
        name="three.yaml",
        **{"datasets.user": user, "datasets.flipped.star": str(star), "datasets.flipped.contrast": "dark"},
    )
    third = snakemake(work, flipped, "--cores", "2")
    assert third.returncode == 0, third.stderr[-3000:]
    one_shard = {**DEMO_CHAIN, "particles": 1, "infer": 1, "all": 1}  # shards: 1 by default
    assert job_stats(third.stdout + third.stderr) == one_shard
    summary = json.loads((work / "results/tiny/datasets/flipped/report/summary.json").read_text())
    assert summary["contrast_correlation"] < 0 and "opposite to the simulations'" in summary["contrast_warning"]


@pytest.mark.slow
def test_a_model_trained_elsewhere_is_used_as_is_and_a_mismatched_card_stops_the_dry_run(tiny_run, tmp_path):
    shipped = tmp_path / "shipped"
    shipped.mkdir()
    for name in ("posterior.pt", "card.json"):
        shutil.copy(tiny_run[0] / "results/tiny/model" / name, shipped / name)
    trained = {"model.name": "borrowed", "model.trained": str(shipped / "posterior.pt")}
    config = write_config(tmp_path, **trained, **{"train.steps": 5000})  # training settings do not matter
    result = snakemake(tmp_path, config, "--cores", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    ran = job_stats(result.stdout + result.stderr)
    assert "train" not in ran and ran["validate"] == 1 and ran["infer"] == 2
    summary = json.loads((tmp_path / "results/borrowed/datasets/demo/report/summary.json").read_text())
    assert summary["model"]["card"] == str(shipped / "card.json")
    card = json.loads((shipped / "card.json").read_text())
    assert json.loads((tmp_path / "results/borrowed/model/priors.json").read_text()) == card["priors"]

    # another model's weights beside this card: its weights_sha256 does not match
    shutil.copy(tiny_run[0] / "results/tiny/model/posterior_last.pt", shipped / "posterior.pt")
    result = snakemake(tmp_path, config, "-n", "--cores", "1")
    assert result.returncode != 0 and "does not match the field 'weights_sha256' of" in result.stderr + result.stdout
    shutil.copy(tiny_run[0] / "results/tiny/model/posterior.pt", shipped / "posterior.pt")
    for change, message in (
        ({"image.box_px": 48}, "image.box_px: card 32, config 48"),
        ({"templates.nma": {"max_rmsd_A": 5.0}}, "templates.nma.max_rmsd_A: card 6.0, config 5.0"),
        (
            {
                "templates.theta_dims": 2,
                "datasets.demo.demo.populations": [{"theta_A": [0, 0], "sd_A": 1, "weight": 1}],
            },
            "templates.theta_dims: card 1, config 2",
        ),
    ):
        bad = write_config(tmp_path, name="bad.yaml", **trained, **change)
        result = snakemake(tmp_path, bad, "-n", "--cores", "1")
        assert result.returncode != 0
        assert "model.trained" in result.stderr + result.stdout and message in result.stderr + result.stdout


@pytest.mark.slow
def test_a_cryosparc_dataset_gets_its_results_back_as_cs_files(tiny_run, tmp_path):
    """A .cs export in, posterior.cs and per-state .cs subsets out: every input field and uid, cryoflow's added."""
    from cryosparc.dataset import Dataset

    work = tmp_path / "work"
    shutil.copytree(tiny_run[0], work, symlinks=True)
    project = tmp_path / "P1"
    table = particles.load_particles(restack(work / DEMO_STAR, project / "J12", per_stack=32)).table
    box = mrcfile.open(project / "J12/Stacks/s00.mrcs").data.shape[-1]
    from_star = {  # .cs field → the particle table's column
        "blob/psize_A": "pixel_size_A",
        "ctf/accel_kv": "rlnVoltage",
        "ctf/cs_mm": "rlnSphericalAberration",
        "ctf/amp_contrast": "rlnAmplitudeContrast",
        "ctf/df1_A": "rlnDefocusU",
        "ctf/df2_A": "rlnDefocusV",
    }
    fields = [("uid", "<u8"), ("blob/path", "S40"), ("blob/idx", "<u4"), ("blob/shape", "<u4", (2,))]
    fields += [(name, "<f4") for name in from_star] + [("ctf/df_angle_rad", "<f4"), ("alignments2D/class", "<u4")]
    records = np.zeros(len(table), dtype=fields)
    records["uid"] = np.random.default_rng(5).integers(2**62, 2**64 - 1, len(table), dtype=np.uint64)
    index, stacks = zip(*(name.split("@") for name in table["rlnImageName"]))
    records["blob/path"] = [">" + s.removeprefix("P1/") for s in stacks]
    records["blob/idx"] = np.array(index, dtype=int) - 1
    records["blob/shape"] = box
    for name, column in from_star.items():
        records[name] = table[column]
    records["ctf/df_angle_rad"] = np.deg2rad(table["rlnDefocusAngle"])
    records["alignments2D/class"] = np.arange(len(table)) % 3
    export = project / "J20" / "J20_particles.cs"
    export.parent.mkdir()
    with open(export, "wb") as handle:
        np.save(handle, records)

    # states cover θ's whole range, so at ≥ half its mass in one every particle joins one: the tiny
    # model's posteriors are too wide for the default 90 % on some machines
    cs = {"star": str(export), "report": {"state_min_mass": 0.5}}
    config = write_config(work, name="cs.yaml", **{"datasets": {"cs": cs}})
    result = snakemake(work, config, "--cores", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "train" not in job_stats(result.stdout + result.stderr)
    out = work / "results/tiny/datasets/cs"
    written = Dataset.load(str(out / "inference/posterior.cs"))
    np.testing.assert_array_equal(written["uid"], records["uid"])  # every row, in order
    raw = np.load(out / "inference/posterior.cs")  # the array on disk
    for name in records.dtype.names:
        np.testing.assert_array_equal(raw[name], records[name])
    star = particles.load_particles(out / "inference/posterior.star").table
    np.testing.assert_allclose(written["cryoflow/theta_mean_A"], star["cryoflowThetaMeanAngst"], rtol=1e-6)
    np.testing.assert_allclose(written["cryoflow/theta_q95_A"], star["cryoflowThetaQ95Angst"], rtol=1e-6)
    assert {"cryoflow/theta_std_A", "cryoflow/theta_map_A", "cryoflow/theta_edge_mass"} <= set(written.fields())
    check_result_group(out / "inference/posterior.csg", len(records))
    states = json.loads((out / "populations/populations.json").read_text())["states"]
    assert states and sum(s["n_particles"] for s in states) > 0
    for state in states:
        subset = Dataset.load(str(out / "populations/states" / f"state{state['state']}.cs"))
        assert len(subset) == state["n_particles"] and set(subset["uid"]) <= set(records["uid"])
        check_result_group(out / "populations/states" / f"state{state['state']}.csg", len(subset))
        inside = (subset["cryoflow/theta_q50_A"] >= state["theta_low_A"] - 3) & (
            subset["cryoflow/theta_q50_A"] <= state["theta_high_A"] + 3
        )
        assert inside.all()
