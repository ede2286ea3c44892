"""Micrographs: reading them as RELION users have them, windows on the training grid, maps and candidates."""

import mrcfile
import numpy as np
import pandas as pd
import pytest
import starfile

from cryoflow.analysis import candidates, picking
from cryoflow.errors import InputError
from cryoflow.io import micrographs
from cryoflow.io.star import write_star
from cryoflow.physics import whitening


def gaussian_image(shape, centre_px, sigma_px):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return np.exp(-0.5 * ((yy - centre_px[1]) ** 2 + (xx - centre_px[0]) ** 2) / sigma_px**2).astype(np.float32)


def test_resampling_a_micrograph_keeps_positions_and_widths_in_angstrom():
    """A Gaussian 12 Å wide at (300 Å, 200 Å) on a 0.8 Å, 600 × 500 grid is the same Gaussian at 2 Å."""
    image = gaussian_image((500, 600), (300 / 0.8, 200 / 0.8), 12 / 0.8)
    out, pixel = picking.resample_micrograph(image, 0.8, 2.0)
    assert out.shape == (200, 240) and pixel == pytest.approx(2.0, rel=1e-3)
    expected = gaussian_image(out.shape, (300 / pixel, 200 / pixel), 12 / pixel)
    np.testing.assert_allclose(out, expected, atol=2e-3)
    assert out.sum() * pixel**2 == pytest.approx(image.sum() * 0.8**2, rel=1e-3)  # mass kept


def test_tile_noise_power_of_white_noise_is_flat_and_whitening_flattens_coloured_noise():
    rng = np.random.default_rng(0)
    white = rng.normal(size=(512, 768)).astype(np.float32)
    power = picking.tile_noise_power(white, 64)
    assert np.allclose(power[1:33], 64 * 64, rtol=0.15)  # |F|² of unit white noise is box² at every radius
    # coloured noise: power ∝ 1 / (1 + (s/s0)²); windows whitened by the micrograph's spectrum come out flat
    fy, fx = np.fft.fftfreq(512)[:, None], np.fft.rfftfreq(768)[None, :]
    shape = 1.0 / np.sqrt(1.0 + (np.sqrt(fy**2 + fx**2) / 0.05) ** 2)
    coloured = np.fft.irfft2(np.fft.rfft2(white) * shape, s=white.shape).astype(np.float32)
    noise_power = picking.tile_noise_power(coloured, 64)
    assert noise_power[2] / noise_power[30] > 5
    batches = list(picking.window_batches(coloured, 64, 16, noise_power, 256))
    flat = whitening.radial_power(np.concatenate(batches))
    assert flat[2:32].max() / flat[2:32].min() < 1.3
    np.testing.assert_allclose(np.concatenate(batches).std(axis=(1, 2), ddof=1), 1.0, rtol=1e-4)  # as particles


def test_window_grid_and_map_coordinates_round_trip():
    rows, cols = picking.window_grid((300, 400), 64, 4)
    assert rows[-1] + 64 <= 300 and cols[-1] + 64 <= 400 and len(rows) == (300 - 64) // 4 + 1
    image = np.arange(300 * 400, dtype=np.float32).reshape(300, 400)
    view = picking.windows(image, 64, 4)
    assert view.shape == (len(rows), len(cols), 64, 64) and view[2, 3, 0, 0] == image[8, 12]
    result = {"origin_A": (32 * 2.0, 32 * 2.0), "map_pixel_A": 4 * 2.0}
    x, y = candidates.map_to_micrograph_px(2, 3, result, micrograph_pixel_A=1.0)
    assert (x, y) == (64 + 3 * 8, 64 + 2 * 8)  # the window's centre, in the original 1 Å pixels
    r, c = candidates.nearest_map_pixel([x + 3], [y - 3], result, 1.0, view.shape[:2])
    assert (r[0], c[0]) == (2, 3)


def test_local_maxima_pick_peaks_apart_and_above_threshold():
    score = np.zeros((50, 60), np.float32)
    for (r, c), value in {(10, 10): 0.9, (12, 12): 0.95, (30, 40): 0.8, (45, 5): 0.3}.items():
        score[r, c] = value
    picked = candidates.local_maxima(score, min_distance_px=5, threshold=0.5)
    assert picked == [(12, 12), (30, 40)]  # (10, 10) is within 5 of a better peak; (45, 5) is below 0.5
    assert candidates.local_maxima(score, 1, 0.5, limit=1) == [(12, 12)]
    assert candidates.match(np.array([[0, 0], [10, 0], [50, 50]]), np.array([[1, 0], [11, 1], [90, 90]]), 3) == (
        2,
        1,
        1,
    )


def test_maps_are_mrc_images_with_the_stride_as_pixel_and_the_first_window_as_origin(tmp_path):
    result = {"origin_A": (64.0, 64.0), "map_pixel_A": 8.0}
    values = np.random.default_rng(1).random((20, 30)).astype(np.float32)
    [path] = candidates.write_score_map(tmp_path / "m.mrc", values, result)
    assert mrcfile.validate(str(path), print_file=open("/dev/null", "w"))
    data, pixel, origin = candidates.read_score_map(path)
    np.testing.assert_array_equal(data, values)
    assert pixel == 8.0 and origin == (64.0, 64.0)
    two = candidates.write_score_map(tmp_path / "t.mrc", np.stack([values, -values], axis=-1), result)
    assert [p.name for p in two] == ["t1.mrc", "t2.mrc"]


def write_micrograph(path, data, pixel_A):
    path.parent.mkdir(parents=True, exist_ok=True)
    with mrcfile.new(path, overwrite=True) as mrc:
        mrc.set_data(np.asarray(data, np.float32))
        mrc.voxel_size = pixel_A


def ctf_star(tmp_path, names, pixel_A=1.0, drop=()):
    optics = pd.DataFrame(
        [
            {
                "rlnOpticsGroupName": "opticsGroup1",
                "rlnOpticsGroup": 1,
                "rlnMicrographPixelSize": pixel_A,
                "rlnVoltage": 300.0,
                "rlnSphericalAberration": 2.7,
                "rlnAmplitudeContrast": 0.1,
            }
        ]
    )
    rows = pd.DataFrame(
        [
            {
                "rlnMicrographName": n,
                "rlnOpticsGroup": 1,
                "rlnDefocusU": 12000.0 + 100 * i,
                "rlnDefocusV": 11800.0,
                "rlnDefocusAngle": 30.0,
            }
            for i, n in enumerate(names)
        ]
    )
    star = tmp_path / "CtfFind" / "job003" / "micrographs_ctf.star"
    write_star(star, {"optics": optics, "micrographs": rows.drop(columns=list(drop))})
    return star


def test_a_ctf_job_star_file_gives_micrographs_with_their_ctf_and_pixel_size(tmp_path):
    for i in (1, 2):
        write_micrograph(tmp_path / "MotionCorr" / "job002" / f"m{i}.mrc", np.zeros((300, 320)), 1.0)
    star = ctf_star(tmp_path, ["MotionCorr/job002/m1.mrc", "MotionCorr/job002/m2.mrc"])
    found = micrographs.from_star(star)
    assert [m.path for m in found] == [tmp_path / "MotionCorr" / "job002" / f"m{i}.mrc" for i in (1, 2)]
    assert found[1].defocus_u_A == 12100 and found[1].defocus_v_A == 11800 and found[1].defocus_angle_deg == 30
    assert found[0].pixel_size_A == 1.0 and found[0].voltage_kV == 300 and found[0].amplitude_contrast == 0.1
    headers = micrographs.check(found, 256.0, str(star))
    assert headers[0].shape == (300, 320)
    assert micrographs.read(found[0].path, headers[0]).shape == (300, 320)
    files = micrographs.from_files(
        str(tmp_path / "MotionCorr" / "job002" / "*.mrc"),
        15000.0,
        1.0,
        {"voltage_kV": 200.0, "cs_mm": 2.7, "amplitude_contrast": 0.07},
    )
    assert len(files) == 2 and files[0].defocus_A == 15000 and files[0].voltage_kV == 200


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing", "in _rlnMicrographName not found"),
        ("truncated", "truncated"),
        ("pixel", "pixel size 2 Å differs from the 1 Å"),
        ("no_defocus", "no _rlnDefocusU column"),
        ("small", "smaller than one 256 Å window"),
        ("stack", "one 2-D image"),
    ],
)
def test_bad_micrographs_stop_with_the_file_and_field_named(tmp_path, case, message):
    path = tmp_path / "MotionCorr" / "job002" / "m1.mrc"
    write_micrograph(path, np.zeros((300, 320)), 2.0 if case == "pixel" else 1.0)
    if case == "truncated":
        path.write_bytes(path.read_bytes()[:-1000])
    elif case == "missing":
        path.unlink()
        path.with_name("m2.mrc").write_bytes(b"")  # the STAR file names m1.mrc: m2 does not stand in
    elif case == "small":
        write_micrograph(path, np.zeros((200, 320)), 1.0)
    elif case == "stack":
        write_micrograph(path, np.zeros((3, 300, 320)), 1.0)
    star = ctf_star(tmp_path, ["MotionCorr/job002/m1.mrc"], drop=["rlnDefocusU"] if case == "no_defocus" else ())
    with pytest.raises(InputError, match=message) as error:
        micrographs.check(micrographs.from_star(star), 256.0, str(star))
    assert str(star if case in ("no_defocus", "missing") else path) in str(error.value)


def test_coordinate_star_files_open_with_starfile(tmp_path):
    result = {
        "origin_A": (64.0, 64.0),
        "map_pixel_A": 8.0,
        "maps": {
            "score": np.full((10, 10), 0.9),
            "theta_mean": np.ones((10, 10)),
            "theta_std": np.ones((10, 10)),
            "edge_mass": np.zeros((10, 10)),
            "atypicality_p": np.ones((10, 10)),
        },
    }
    rows = candidates.candidate_rows("mic.mrc", [(1, 2), (5, 5)], result, 1.0)
    candidates.write_coordinates(tmp_path / "mic_pick.star", rows)
    table = starfile.read(tmp_path / "mic_pick.star")
    assert list(table["rlnCoordinateX"]) == [80.0, 104.0] and list(table["rlnCoordinateY"]) == [72.0, 104.0]
    assert (table["cryoflowThetaMeanAngst"] == 1.0).all() and "rlnMicrographName" not in table
    candidates.write_coordinates(tmp_path / "none.star", [])
    assert len(starfile.read(tmp_path / "none.star")) == 0


TINY_SET = {
    "demo": {
        "n_micrographs": 2,
        "size_px": 384,
        "pixel_size_A": 2.0,
        "box_px": 72,
        "particles_per_micrograph": 8,
        "junk_per_micrograph": 2,
        "populations": [{"theta_A": -3.5, "sd_A": 0.4, "weight": 0.7}, {"theta_A": 3.0, "sd_A": 0.4, "weight": 0.3}],
    },
    "shards": 2,
}


@pytest.mark.slow
def test_tiny_micrograph_set_end_to_end(tmp_path):
    """A junk-aware tiny model on two synthetic micrographs: maps, candidates RELION reads, summary and figure."""
    from workflow_helpers import snakemake, write_config

    configfile = write_config(
        tmp_path,
        **{
            "micrographs": {"synthetic": TINY_SET},
            "train.junk_fraction": 0.25,
            "picking": {"stride_px": 2, "threshold": 0.3},
        },
    )
    result = snakemake(tmp_path, configfile, "--cores", "2", "results/tiny/micrographs/synthetic/report/summary.json")
    assert result.returncode == 0, result.stderr[-5000:]
    out = tmp_path / "results" / "tiny" / "micrographs" / "synthetic"
    summary = __import__("json").loads((out / "report" / "summary.json").read_text())
    assert summary["n_micrographs"] == 2 and summary["score"] == "p_particle"
    assert summary["n_windows"] == 2 * ((192 - 32) // 2 + 1) ** 2  # 384 px at 2 Å → 192 px at 4 Å, 32 px windows
    truth = summary["truth"]
    assert truth["n_true_particles"] == 16 and truth["window_offset_max_A"] <= 4 * 2**0.5 + 1e-6
    assert {"picking_p_particle", "picking_sharp_typical"} <= set(truth)
    assert -1 <= truth["pearson_r_on_particles"] <= 1
    table = starfile.read(out / "candidates.star")
    if len(table):  # in bounds of the 384 px micrographs, on their names
        assert table["rlnCoordinateX"].between(0, 383).all() and table["rlnCoordinateY"].between(0, 383).all()
        assert set(table["rlnMicrographName"]) <= {f"MotionCorr/job002/Micrographs/mic_00{i}.mrc" for i in (1, 2)}
    listing = starfile.read(out / "coordinates.star")
    for path in listing["rlnMicrographCoordinates"]:
        assert (tmp_path / path).is_file()
    [mean_map] = (out / "picks" / "shard000").glob("*_theta_mean.mrc")
    with mrcfile.open(mean_map) as mrc:
        assert mrc.voxel_size.x == pytest.approx(8.0) and mrc.header.origin.x == pytest.approx(64.0)
    assert (out / "report" / "micrograph.png").stat().st_size > 10000


@pytest.mark.parametrize(
    "mset, message",
    [
        ({"files": "nowhere/*.mrc", "defocus_A": 10000, "pixel_size_A": 1.0}, "micrographs.m.files: no file matches"),
        ({"star": "absent.star"}, "micrographs.m.star: file 'absent.star' not found"),
        ({}, "micrographs.m: give one of star"),
        ({"files": "{data}/*.mrc", "pixel_size_A": 1.0}, "micrographs.m.defocus_A: needed with files"),
        ({"demo": TINY_SET["demo"], "shards": 3}, "micrographs.m.shards: 3 shards but demo.n_micrographs is 2"),
        (
            {"files": "{data}/*.mrc", "defocus_A": 1e4, "pixel_size_A": 1.0, "picking": {"stride_px": 0}},
            "micrographs.m.picking.stride_px",
        ),
        (  # a copy cut short: refused when the DAG is built, not in the pick job after training
            {"files": "{data}/*.mr*", "defocus_A": 1e4, "pixel_size_A": 1.0},
            "b.mrc_cut: 181024 bytes, but its header (300 × 300 × 1, mode 2) needs 361024: truncated",
        ),
    ],
)
def test_bad_micrograph_sets_are_refused_naming_the_key(tmp_path, mset, message):
    from workflow_helpers import check_config, write_config

    from cryoflow.errors import ConfigError

    write_micrograph(tmp_path / "data" / "a.mrc", np.zeros((300, 300)), 1.0)
    (tmp_path / "data" / "b.mrc_cut").write_bytes((tmp_path / "data" / "a.mrc").read_bytes()[:181024])
    mset = {k: v.format(data=tmp_path / "data") if isinstance(v, str) else v for k, v in mset.items()}
    with pytest.raises(ConfigError) as refused:
        check_config(tmp_path, write_config(tmp_path, micrographs={"m": mset}))
    assert message in str(refused.value)


def test_a_truncated_micrograph_stops_snakemake_before_any_job(tmp_path):
    """The wiring: common.smk's input functions show the micrograph check's message."""
    from workflow_helpers import snakemake, write_config

    write_micrograph(tmp_path / "data" / "a.mrc", np.zeros((300, 300)), 1.0)
    (tmp_path / "data" / "b.mrc_cut").write_bytes((tmp_path / "data" / "a.mrc").read_bytes()[:181024])
    mset = {"files": str(tmp_path / "data" / "*.mr*"), "defocus_A": 1e4, "pixel_size_A": 1.0}
    result = snakemake(tmp_path, write_config(tmp_path, micrographs={"m": mset}), "-n")
    output = result.stdout + result.stderr
    assert result.returncode != 0 and "micrographs.m.files: " in output and "truncated" in output, output[-2000:]
    assert not (tmp_path / "results").exists()


def test_scores_are_zero_where_the_latent_is_atypical():
    theta_range = np.array([[-6.0, 6.0]])  # a uniform prior's σ: 12 / √12 = 3.46 Å
    maps = {
        "theta_std": np.array([[np.sqrt(12.0), np.sqrt(3.0), 0.0]]),
        "atypicality_p": np.array([[0.5, 0.5, 0.01]]),
        "p_particle": np.array([[1.0, 0.25, 1.0]]),
    }
    sharp = candidates.window_score(maps, "sharp_typical", theta_range, typical_p=0.05)
    np.testing.assert_allclose(sharp, [[0.0, 0.5, 0.0]], atol=1e-6)  # the last is atypical: 0 however sharp
    particle = candidates.window_score(maps, "p_particle", theta_range, typical_p=0.05)
    np.testing.assert_allclose(particle, [[1.0, 0.25, 0.0]])
    np.testing.assert_allclose(candidates.window_score(maps, "p_particle", theta_range, typical_p=0.0), [[1, 0.25, 1]])
    assert candidates.score_kind("auto", True) == "p_particle" and candidates.score_kind("auto", False) == (
        "sharp_typical"
    )
    with pytest.raises(ValueError, match="junk_fraction"):
        candidates.score_kind("p_particle", False)


def test_window_batches_copy_one_batch_at_a_time():
    """Every window of a 2k micrograph at stride 1 would be 1985² × 64² floats (60 GiB): only a batch is copied."""
    import tracemalloc

    image = np.random.default_rng(0).normal(size=(2048, 2048)).astype(np.float32)
    tracemalloc.start()
    batches = picking.window_batches(image, 64, 1, None, 256)
    first, second = next(batches), next(batches)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert first.shape == second.shape == (256, 64, 64) and peak < 64 * 2**20
    np.testing.assert_allclose(second[0], whitening.normalize(image[None, :64, 256:320])[0], atol=1e-5)
    assert sum(len(b) for b in picking.window_batches(image[:200, :300], 64, 8, None, 50)) == 18 * 30
