"""Nothing wrong gets through silently: each case here was read as garbage, accepted, or misreported once."""

import json
import os
import re
import shutil
import struct

import mrcfile
import numpy as np
import pandas as pd
import pytest
from workflow_helpers import ROOT, check_config, snakemake, write_config

from cryoflow.errors import ConfigError, InputError
from cryoflow.io import particles, starindex
from cryoflow.io.fileio import write_json
from cryoflow.io.mrcstack import read_stack_header
from cryoflow.io.npz import NpzWriter
from cryoflow.io.star import write_star
from cryoflow.physics import preprocess


@pytest.fixture()
def stack(tmp_path, data_dir):
    path = tmp_path / "relion31.mrcs"
    shutil.copy(data_dir / "relion31.mrcs", path)
    return path


def set_mode(path, mode: int):
    with open(path, "r+b") as handle:
        handle.seek(12)  # the header's MODE word
        handle.write(struct.pack("<i", mode))


@pytest.mark.parametrize("mode", [1, 0])
def test_a_stack_whose_mode_word_disagrees_with_its_length_stops(stack, mode):
    set_mode(stack, mode)
    with pytest.raises(InputError, match=rf"relion31.mrcs: header mode {mode} .* fit|exactly .* mode 2 \(float32\)"):
        read_stack_header(stack)


def test_a_truncated_stack_stops_and_a_longer_one_warns_with_both_sizes(stack, caplog):
    data = stack.read_bytes()
    stack.write_bytes(data[:-10])
    with pytest.raises(InputError, match=rf"has {len(data) - 10} bytes but its header .* needs {len(data)}"):
        read_stack_header(stack)
    stack.write_bytes(data + b"\0" * 100)
    with caplog.at_level("WARNING"):
        header = read_stack_header(stack)
    assert f"{len(data) + 100} bytes, 100 more than its header" in caplog.text and header.n_images == 5


def test_a_star_row_with_a_missing_field_names_its_line(tmp_path, data_dir):
    lines = (data_dir / "relion31.star").read_text().splitlines()
    row = next(i for i, line in enumerate(lines) if "@relion31.mrcs" in line)
    lines[row] = " ".join(lines[row].split()[:-1])
    star = tmp_path / "short.star"
    star.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match=rf"short.star, line {row + 1}: \d+ fields where data_particles has \d+"):
        particles.load_particles(star)


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_outputs_get_the_permissions_the_umask_gives(tmp_path, umask):
    old = os.umask(umask)
    try:
        write_json(tmp_path / "a.json", {"x": 1})
        write_star(tmp_path / "a.star", {"particles": pd.DataFrame({"rlnImageName": ["1@a.mrcs"]})})
        with NpzWriter(tmp_path / "a.npz") as writer:
            writer.append(x=np.zeros(3))
            writer.close()
        plain = tmp_path / "plain.txt"
        plain.write_text("")
    finally:
        os.umask(old)
    for name in ("a.json", "a.star", "a.npz", "plain.txt"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~umask, name


def gaussian_blob(box, pixel_A, sigma_A):
    y, x = (np.mgrid[:box, :box] - box // 2) * pixel_A
    return np.exp(-(x**2 + y**2) / (2 * sigma_A**2))[None].astype(np.float32)


def width_A(image, pixel_A):
    box = image.shape[-1]
    y, x = (np.mgrid[:box, :box] - box // 2) * pixel_A
    weights = image / image.sum()
    return float(np.sqrt(np.sum(weights * (x**2 + y**2)) / 2))


def test_resampling_lands_on_the_training_pixel_size_and_keeps_sizes_in_angstrom(tmp_path):
    """0.89 Å × 30 px to 1.78 Å: a plain crop to 16 px gave 1.669 Å (6 % off); padding first gives 1.78."""
    image = gaussian_blob(30, 0.89, 3.0)
    out, pixel = preprocess.fourier_crop(image, 0.89, 1.78)
    assert abs(pixel - 1.78) <= 1e-3 * 1.78 and out.shape[-1] == 16
    assert width_A(out[0], pixel) == pytest.approx(3.0, rel=0.01)
    for pixel_in, box_in, pixel_out in ((1.06, 200, 2.0), (0.83, 256, 1.5), (1.0, 97, 3.3)):
        padded, n_out = preprocess.resampling_plan(box_in, pixel_in, pixel_out)
        assert padded >= box_in and n_out % 2 == 0
        assert abs(padded * pixel_in / n_out - pixel_out) <= 1e-3 * pixel_out
    # a pixel size off by orders of magnitude (µm taken for Å) stops before any image is allocated
    with pytest.raises(InputError, match=r"256 px particle of 1.06 Å pixels .* 0.001 Å needs 271360 × 271360 pixels"):
        preprocess.resampling_plan(256, 1.06, 0.001)
    # the stack the particle stage writes states the pixel size its images really have
    with mrcfile.new(tmp_path / "p.mrcs") as mrc:
        mrc.set_data(np.repeat(image, 3, axis=0) + np.random.default_rng(0).normal(size=(3, 30, 30)).astype("f4"))
        mrc.set_image_stack()
    star = tmp_path / "p.star"
    write_star(
        star,
        {"particles": pd.DataFrame({"rlnImageName": [f"{i}@p.mrcs" for i in (1, 2, 3)], "rlnImagePixelSize": 0.89})},
    )
    source = particles.ParticleSource(particles.load_particles(star).table, star)
    preprocess.preprocess(source, tmp_path / "out.mrcs", 16, 1.78)
    with mrcfile.open(tmp_path / "out.mrcs") as mrc:
        assert float(mrc.voxel_size.x) == pytest.approx(preprocess.resampled_pixel_A(30, 0.89, 1.78), rel=1e-5)


def test_one_optics_group_serves_particles_without_an_optics_group_column(tmp_path):
    star = tmp_path / "one.star"
    write_star(
        star,
        {
            "optics": pd.DataFrame({"rlnOpticsGroup": [1], "rlnImagePixelSize": [1.25], "rlnVoltage": [300.0]}),
            "particles": pd.DataFrame({"rlnImageName": ["1@a.mrcs", "2@a.mrcs"]}),
        },
    )
    table = particles.load_particles(star).table
    assert table["pixel_size_A"].tolist() == [1.25, 1.25] and table["rlnVoltage"].tolist() == [300.0, 300.0]


def test_a_non_numeric_pixel_size_names_the_file_the_particle_and_the_field(tmp_path):
    star = tmp_path / "text.star"
    write_star(
        star,
        {"particles": pd.DataFrame({"rlnImageName": ["1@a.mrcs", "2@a.mrcs"], "rlnImagePixelSize": ["1.0", "one"]})},
    )
    with pytest.raises(InputError, match=r"text.star, particle 2: _rlnImagePixelSize 'one' is not a number"):
        particles.load_particles(star)


def test_a_volume_given_as_a_stack_warns_and_blank_images_are_counted_and_not_measured(tmp_path, caplog):
    with mrcfile.new(tmp_path / "volume.mrc") as mrc:
        mrc.set_data(np.random.default_rng(0).normal(size=(16, 16, 16)).astype(np.float32))
    with caplog.at_level("WARNING"):
        read_stack_header(tmp_path / "volume.mrc")
    assert "looks like a 3-D volume (space group 1, nz = nx = 16)" in caplog.text
    rng = np.random.default_rng(1)
    images = rng.normal(size=(40, 32, 32)).astype(np.float32)
    images[[3, 17]] = 0.0  # two empty extractions
    with mrcfile.new(tmp_path / "s.mrcs") as mrc:
        mrc.set_data(images)
        mrc.set_image_stack()
    star = tmp_path / "s.star"
    names = [f"{i + 1}@s.mrcs" for i in range(40)]
    write_star(star, {"particles": pd.DataFrame({"rlnImageName": names, "rlnImagePixelSize": 2.0})})
    source = particles.ParticleSource(particles.load_particles(star).table, star)
    caplog.clear()
    with caplog.at_level("WARNING"):
        spectra = preprocess.estimate_noise_spectra(source, 32, 2.0, 20.0, noise_images=40, chunk=16, seed=0)
        blank = preprocess.preprocess(source, tmp_path / "out.mrcs", 32, 2.0, spectra, chunk=16)
    assert "2 of 40 images picked for the noise spectrum are blank" in caplog.text
    assert "2 blank (constant) images, the first particle 4 (4@s.mrcs)" in caplog.text
    assert np.flatnonzero(blank).tolist() == [3, 17]
    # white noise measured without the blanks is flat and at its true level
    power = spectra["1"][2:14]
    assert np.abs(power / power.mean() - 1).max() < 0.25 and power.mean() == pytest.approx(32 * 32, rel=0.15)


@pytest.mark.parametrize("header", ["# RELION; version 3.0.6", None, 50001])
def test_star_files_are_written_back_with_the_version_they_came_with(tmp_path, header):
    star = tmp_path / "in.star"
    text = "data_\n\nloop_\n_rlnImageName #1\n_rlnDetectorPixelSize #2\n_rlnMagnification #3\n1@a.mrcs 14 100000\n"
    first = "" if header is None else (header if isinstance(header, str) else f"# version {header}") + "\n\n"
    star.write_text(first + text)
    found = particles.load_particles(star)
    write_star(tmp_path / "out.star", particles.shard_blocks(found, [0]), found.version)
    out = (tmp_path / "out.star").read_text()
    assert out.startswith(first + "data_") if header is not None else out.startswith("data_")


@pytest.mark.parametrize(
    "change,message",
    [
        ({"image.box_px": 32.0}, "image.box_px: 32.0 is not of type 'integer'"),
        ({"structure.source": "NOTES"}, "/NOTES' has no ATOM/HETATM records and no _atom_site loop"),
        ({"datasets.demo.shards": 200}, "datasets.demo.shards: 200 shards but demo.n_particles is 96"),
        ({"datasets.user.star": "STAR", "datasets.user.shards": 6}, "datasets.user.shards: 6 shards but"),
        # the explicit likelihood (on in the tiny config): 1-D θ only, memory estimated first, defocus needed
        (
            {"templates.theta_dims": 2, "datasets.demo": None},
            "validation.likelihood: the explicit likelihood is implemented for a 1-D θ",
        ),
        (
            {"validation.likelihood.max_memory_gb": 0.001},
            "validation.likelihood.max_memory_gb: the marginalized grids need about",
        ),
        ({"simulator.astigmatism_max_A": 200.0}, "validation.likelihood.nuisance: marginalized sums defocus only"),
        (
            {"datasets.user.star": "NODF"},
            "datasets.user.report.likelihood.nuisance: ctf_known needs each particle's defocus, and",
        ),
        (
            {
                "datasets.user.star": "NODF",
                "datasets.user.report": {"likelihood": None},
                "train.condition_on_ctf": True,
            },
            "train.condition_on_ctf: the model needs each particle's defocus",
        ),
        # a pixel size off by orders of magnitude: resampling a 256 px particle to 4 Å would need 6 400 px
        (
            {"datasets.user.star": "STAR", "datasets.user.pixel_size_A": 100.0},
            "datasets.user.pixel_size_A: particles of 100 Å pixels in 256 px boxes",
        ),
        ({"datasets.user.star": "BIGPIX"}, "datasets.user.star: particles of 280.6 Å pixels in 256 px boxes"),
        (
            {"train.processes": 3},
            "train.batch_size: 32 does not split evenly over 3 ranks (train.processes 3 × "
            "train.nodes 1); use a multiple of 3",
        ),
        # each of 8 ranks would get round(0.05 × 4) = 0 junk images: the particle output would learn no junk
        (
            {"train.processes": 8, "train.junk_fraction": 0.05},
            "train.junk_fraction: 0.05 of each rank's 4 images is less than one (8 ranks over train.batch_size 32)",
        ),
        ({"validation.fixed_snr": []}, "validation.fixed_snr: empty, and validation.likelihood computes"),
        ({"model.trained": "NULLCARD"}, "card.json holds NoneType, not a model card"),
        # an infer job is one process on one GPU: more would be held and never used
        ({"inference.gpus": 2}, "inference.gpus: 2 GPUs, but each job is one process on one GPU; use 1, and more"),
        ({"datasets.demo.inference": {"gpus": 3}}, "datasets.demo.inference.gpus: 3 GPUs, but each job is one"),
    ],
)
def test_cheap_checks_refuse_the_config(tmp_path, data_dir, change, message):
    (tmp_path / "NOTES").write_text("this is not a structure\n")
    rows = "".join(f"{i}@relion31.mrcs 14 100000\n" for i in (1, 2))
    (tmp_path / "NODF").write_text(
        "data_\n\nloop_\n_rlnImageName #1\n_rlnDetectorPixelSize #2\n_rlnMagnification #3\n" + rows
    )
    shutil.copy(data_dir / "relion31.mrcs", tmp_path)
    star = tmp_path / "relion31.star"
    star.write_text((data_dir / "relion31.star").read_text())
    (tmp_path / "BIGPIX").write_text(star.read_text().replace(" 2.806000 ", " 280.600000 "))  # optics group's
    (tmp_path / "trained").mkdir()
    (tmp_path / "trained" / "posterior.pt").write_bytes(b"weights")
    (tmp_path / "trained" / "card.json").write_text("null")
    change = {k: str(tmp_path / "trained" / "posterior.pt") if v == "NULLCARD" else v for k, v in change.items()}
    change = {k: str(tmp_path / v) if v in ("NOTES", "STAR", "NODF", "BIGPIX") else v for k, v in change.items()}
    change = {k: str(star) if v == str(tmp_path / "STAR") else v for k, v in change.items()}
    with pytest.raises(ConfigError) as refused:
        check_config(tmp_path, write_config(tmp_path, **change))
    assert message in str(refused.value)


@pytest.mark.slow
def test_documented_alternative_forms_run_through_the_workflow(tmp_path, data_dir):
    """Keys the docs give in more than one form, each in its other form, through the whole workflow:
    a bead-width range with map projection (maps rasterized at its low end), poses near the template's,
    mask radius and chains left to their defaults, heavy-atom beads, a constant learning rate, a
    wall-time budget, CPU devices, a CTF-conditioned estimator, and a user dataset with select, datadir and a
    pixel-size override (its explicit likelihood with maps and a bead-width range)."""
    (tmp_path / "meta").mkdir()
    (tmp_path / "stacks").mkdir()
    shutil.copy(data_dir / "relion31.mrcs", tmp_path / "stacks")
    shutil.copy(data_dir / "relion31.star", tmp_path / "meta")
    user = {
        "star": str(tmp_path / "meta" / "relion31.star"),
        "datadir": str(tmp_path / "stacks"),
        "select": {"rlnClassNumber": [1]},
        "pixel_size_A": 2.806,
    }
    changes = {
        "simulator.bead_sigma_A": [3.0, 5.0],
        "simulator.projection": "volumes",
        "simulator.volume_oversample": 2,
        "simulator.pose_max_angle_deg": 30.0,
        "simulator.mask_radius_A": None,
        "structure.chains": None,
        "structure.beads": "heavy",
        "train.lr_schedule": "constant",
        "train.max_hours": 1.0,
        "train.steps": 10,
        "train.device": "cpu",
        "train.condition_on_ctf": True,
        "train.embedding": {"latent_dim": 16, "width": 4, "crop_px": 16},  # a band-limited embedding
        "inference.device": "cpu",
        "datasets.demo": None,
        "datasets.user": user,
    }
    result = snakemake(tmp_path, write_config(tmp_path, **changes), "--cores", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    with mrcfile.open(tmp_path / "results/tiny/volumes/template_000.mrc") as mrc:
        density, voxel = mrc.data, float(mrc.voxel_size.x)
    ensemble = np.load(tmp_path / "results/tiny/templates/ensemble.npz")
    assert ensemble["coords_A"].shape[1] > 3000  # heavy atoms of both chains of 4AKE: chains left out means all
    assert density.sum() * voxel**3 == pytest.approx(ensemble["weights"].sum(), rel=0.02)
    priors = json.loads((tmp_path / "results/tiny/model/priors.json").read_text())
    assert priors["bead_sigma_range_A"] == [3.0, 5.0] and priors["mask_radius_A"] is None
    summary = json.loads((tmp_path / "results/tiny/datasets/user/report/summary.json").read_text())
    assert summary["n_particles"] == 5 and summary["n_blank_images"] == 0
    # train.condition_on_ctf: the model reads each particle's defocus from its STAR row
    card = json.loads((tmp_path / "results/tiny/model/card.json").read_text())
    assert card["architecture"]["ctf_context"]["features"] == ["defocus_A"]
    assert card["architecture"]["crop_px"] == 16  # read on the 32 px grid, cropped by the model itself
    assert (tmp_path / "results/tiny/datasets/user/report/likelihood.json").is_file()


def corrupt_cs(folder, change):
    """``p.cs`` of the fuzzer's dataset with one change of its records (or its uid field dropped)."""
    records = np.load(folder / "p.cs")
    if change == "no uid":
        records = records[[n for n in records.dtype.names if n != "uid"]]
    else:
        change(records)
    with open(folder / "bad.cs", "wb") as handle:
        np.save(handle, records)
    return folder / "bad.cs"


def move_stack(records):
    records["blob/path"][3] = b">gone.mrcs"


def repeat_uid(records):
    records["uid"][4] = records["uid"][1]


def nan_defocus(records):
    records["ctf/df1_A"][6] = np.nan


@pytest.mark.parametrize(
    "dataset,message",
    [
        # a NaN CTF value would give NaN posteriors silently: refused at -n with the file, particle and column
        ("r31.star:nan", "r31.star: particle 3 (000003@b.mrcs) has _rlnDefocusU 'nan', not a finite number"),
        ("r31.star:inf-voltage", "r31.star: optics group 1 has _rlnVoltage 'inf', not a finite number"),
        ("cs:nan", "bad.cs: particle 7 (000001@b.mrcs) has _rlnDefocusU 'nan', not a finite number"),
        # a repeated uid would put one particle's posterior on another in posterior.cs
        ("cs:repeat", "bad.cs: uid 101 repeats (rows 2 and 5): a corrupt export"),
        ("cs:no uid", "bad.cs: no uid field"),
        # a .cs dataset with select is checked like any other (it skipped every DAG-time check)
        ("cs:select", "p.cs: column _rlnMissing (select) not found"),
        # a stack a .cs export names that is not there: the field named is cryoSPARC's, not a STAR column
        ("cs:no stack", "bad.cs: stack 'gone.mrcs' in blob/path not found"),
    ],
)
def test_corrupt_particle_metadata_is_refused_at_the_dry_run(tmp_path, dataset, message):
    import particle_fuzzer

    folder = particle_fuzzer.make_dataset(tmp_path / "data")["folder"]
    kind, _, what = dataset.partition(":")
    select = None
    if kind == "r31.star":
        star = folder / "r31.star"
        text = star.read_text()
        if what == "nan":
            lines = text.splitlines()
            row = next(i for i, line in enumerate(lines) if line.startswith("000003@"))
            fields = lines[row].split()
            lines[row] = " ".join([fields[0], "nan", *fields[2:]])
            text = "\n".join(lines) + "\n"
        else:
            text = text.replace(" 300.000000 ", " inf ", 1)
        star.write_text(text)
    elif what == "select":
        star, select = folder / "p.cs", {"rlnMissing": [1]}
    else:
        changes = {"nan": nan_defocus, "repeat": repeat_uid, "no uid": "no uid", "no stack": move_stack}
        star = corrupt_cs(folder, changes[what])
    change = {"datasets.user.star": str(star), "datasets.user.shards": 1, "datasets.user.select": select}
    with pytest.raises(ConfigError) as refused:
        check_config(tmp_path, write_config(tmp_path, **change))
    assert message in str(refused.value)
    assert "datasets.user" in str(refused.value)


def test_a_cryosparc_dataset_with_select_indexes_the_rows_the_particle_stage_keeps(tmp_path):
    import particle_fuzzer

    folder = particle_fuzzer.make_dataset(tmp_path)["folder"]
    select = {"cryosparcUid": [101, 103, 104]}
    index = starindex.index_cs(folder / "p.cs", select)
    found = particles.load_particles(folder / "p.cs", select=select)
    assert index.stack_names == [n.split("@", 1)[1] for n in found.table["rlnImageName"]] and len(index) == 3


@pytest.mark.parametrize(
    "train,local,env,message",
    [
        ({"nodes": 2}, True, {}, "train.nodes: 2 nodes need SLURM (run with --profile profiles/slurm"),
        ({"processes": 1000000}, True, {}, "train.processes: 1000000 CPU ranks but this machine, which runs the"),
        ({"nodes": 2}, False, {}, None),  # the SLURM executor
        ({"nodes": 2}, True, {"SLURM_JOB_ID": "7"}, None),  # inside an allocation
        ({"processes": 1000000, "device": "cuda"}, True, {}, None),  # CUDA ranks are train.gpus
    ],
)
def test_ranks_the_machine_cannot_start_are_refused_before_any_job(train, local, env, message):
    from cryoflow.workflow import configuration

    train = {"nodes": 1, "processes": 1, "device": "auto", **train}
    if message is None:
        configuration.check_launch(train, local, 16, env)
    else:
        with pytest.raises(ConfigError, match=re.escape(message)):
            configuration.check_launch(train, local, 16, env)


def ctf_card(folder, low_A, high_A):
    """A model file and the card of a CTF-conditioned model trained on mean defocus low_A–high_A."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "posterior.pt").write_bytes(b"weights")
    context = {"features": ["defocus_A"], "low": [low_A], "high": [high_A]}
    write_json(folder / "card.json", {"architecture": {"ctf_context": context}})
    return folder / "posterior.pt"


@pytest.mark.parametrize(
    "change,message",
    [
        # the config's CTF-conditioned model, its prior narrower than the particles' defocus
        (
            {"train.condition_on_ctf": True, "simulator.defocus_range_A": [5000, 6000]},
            "datasets.user: mean defocus 12375–12977 Å in",
        ),
        # a model trained elsewhere: its card decides that it is CTF-conditioned, not this config's train key
        ({"model.trained": "CARD", "train.condition_on_ctf": False}, "prior 20000–30000 Å (the card of model.trained)"),
        # and a dataset without per-particle defocus is refused for it, whatever this config's train key says
        (
            {"model.trained": "CARD", "datasets.user.star": "NODF", "datasets.user.report": {"likelihood": None}},
            "model.trained: the model needs each particle's defocus (it is CTF-conditioned), and datasets.user",
        ),
    ],
)
def test_particles_outside_a_ctf_conditioned_models_defocus_prior_are_refused_naming_the_dataset(
    tmp_path, data_dir, change, message
):
    shutil.copy(data_dir / "relion31.mrcs", tmp_path)
    shutil.copy(data_dir / "relion31.star", tmp_path)
    rows = "".join(f"{i}@relion31.mrcs 14 100000\n" for i in (1, 2))
    nodf = "data_\n\nloop_\n_rlnImageName #1\n_rlnDetectorPixelSize #2\n_rlnMagnification #3\n" + rows
    (tmp_path / "NODF").write_text(nodf)
    star = tmp_path / ("NODF" if change.get("datasets.user.star") == "NODF" else "relion31.star")
    change = {**change, "datasets.user.star": str(star), "datasets.user.shards": 1}
    if change.get("model.trained") == "CARD":
        change["model.trained"] = str(ctf_card(tmp_path / "elsewhere", 20000.0, 30000.0))
    with pytest.raises(ConfigError, match=re.escape(message)):
        starindex_check(tmp_path, change)


def starindex_check(tmp_path, change):
    """The DAG's checks as far as the particle index (a model trained elsewhere whose recipe is not this
    config's stays out of the way: its card is read for its CTF context only)."""
    from cryoflow.workflow import configuration

    cfg = yaml_config(tmp_path, change)
    settings = configuration.dataset_settings(cfg, "user")
    configuration.dataset_index("user", settings, cfg)


def yaml_config(tmp_path, change):
    import yaml
    from snakemake.utils import update_config

    from cryoflow.workflow import schema

    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    update_config(cfg, yaml.safe_load(write_config(tmp_path, **change).read_text()))
    return schema.validate(cfg)


def test_a_model_file_its_card_does_not_name_is_refused_before_any_job(tmp_path):
    """A truncated results/<model>/model/posterior.pt of an earlier run: refused at -n, not in every job."""
    from cryoflow.workflow import modelcard

    folder = tmp_path / "results" / "tiny" / "model"
    model = ctf_card(folder, 0.0, 1.0)
    write_json(folder / "card.json", {"weights_sha256": modelcard.sha256_files(model)})
    modelcard.check_own_model(folder)  # whole
    model.write_bytes(b"weig")  # truncated
    with pytest.raises(ConfigError, match=r"posterior.pt does not match the field 'weights_sha256' of .*card.json"):
        modelcard.check_own_model(folder)
    configfile = write_config(tmp_path)
    run = snakemake(tmp_path, configfile, "-n")
    assert run.returncode != 0 and "does not match the field 'weights_sha256'" in run.stdout + run.stderr
