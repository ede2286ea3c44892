import shutil

import mrcfile
import numpy as np
import pandas as pd
import pytest

from cryoflow.errors import InputError
from cryoflow.io import particles, starindex
from cryoflow.io.star import concatenate_star, read_star, star_version, write_star

STACK_NAME = "relion31.mrcs"


def test_relion31_optics_merged_and_stacks_resolved_from_project_root(relion_job):
    table = particles.particle_table(relion_job)
    assert len(table) == 5
    np.testing.assert_allclose(table["pixel_size_A"], 2.806)
    source = particles.ParticleSource(table, relion_job)
    assert source.headers[0].path.name == STACK_NAME  # the stack lacks the MAP stamp: read leniently
    images = source.read(np.array([4, 0]))
    assert images.shape == (2, 256, 256) and images.dtype == np.float32
    with mrcfile.mmap(source.headers[0].path, permissive=True) as mrc:
        np.testing.assert_array_equal(images[0], mrc.data[4])


def test_stack_found_by_basename_and_datadir(tmp_path, data_dir):
    shutil.copy(data_dir / "relion31.mrcs", tmp_path / STACK_NAME)
    shutil.copy(data_dir / "relion31.star", tmp_path / "moved.star")
    assert starindex.resolve_stack_path("Extract/job133/Micrographs/" + STACK_NAME, tmp_path / "moved.star") == (
        tmp_path / STACK_NAME
    )
    other = tmp_path / "elsewhere"
    other.mkdir()
    found = starindex.resolve_stack_path("Extract/x/" + STACK_NAME, other / "p.star", datadir=tmp_path)
    assert found == tmp_path / STACK_NAME


def test_relion30_pixel_size_from_detector_and_magnification(tmp_path):
    star = tmp_path / "old.star"
    star.write_text(
        "data_images\n\nloop_\n_rlnImageName #1\n_rlnDetectorPixelSize #2\n_rlnMagnification #3\n"
        "1@a.mrcs 5.0 50000\n2@a.mrcs 5.0 50000\n"
    )
    table = particles.particle_table(star)
    np.testing.assert_allclose(table["pixel_size_A"], 1.0)


def test_star_round_trip(tmp_path):
    blocks = {
        "optics": pd.DataFrame({"rlnOpticsGroup": [1], "rlnImagePixelSize": [1.5]}),
        "particles": pd.DataFrame(
            {"rlnImageName": ["1@a.mrcs", "2@a.mrcs"], "rlnOpticsGroup": [1, 1], "cryoflowThetaMeanAngst": [-1.25, 3.5]}
        ),
    }
    path = tmp_path / "out.star"
    write_star(path, blocks)
    assert path.read_text().startswith("# version 30001")
    back = read_star(path)
    pd.testing.assert_frame_equal(back["particles"], blocks["particles"])
    assert particles.particle_table(path)["pixel_size_A"].tolist() == [1.5, 1.5]


def test_ctf_priors_read_ranges_and_optics_groups(tmp_path):
    star = tmp_path / "ctf.star"
    star.write_text(
        "data_optics\n\nloop_\n_rlnOpticsGroup\n_rlnVoltage\n_rlnSphericalAberration\n_rlnAmplitudeContrast\n"
        "_rlnImagePixelSize\n1 300.0 2.7 0.1 1.1\n2 200.0 2.0 0.07 1.3\n\n"
        "data_particles\n\nloop_\n_rlnImageName\n_rlnOpticsGroup\n_rlnDefocusU\n_rlnDefocusV\n_rlnPhaseShift\n"
        "1@a.mrcs 1 12000 10000 30\n2@a.mrcs 1 8000 8000 60\n3@a.mrcs 2 20000 19000 45\n"
    )
    found = particles.ctf_priors(particles.particle_table(star), star)
    assert found["defocus_range_A"] == [8000.0, 19500.0]
    assert found["astigmatism_max_A"] == 1000.0
    assert found["phase_shift_range_deg"] == [30.0, 60.0]
    assert found["pixel_sizes_A"] == [1.1, 1.3]
    assert "b_factor_range_A2" not in found
    assert found["optics"] == [
        {"voltage_kV": 200.0, "cs_mm": 2.0, "amplitude_contrast": 0.07, "weight": 1},
        {"voltage_kV": 300.0, "cs_mm": 2.7, "amplitude_contrast": 0.1, "weight": 2},
    ]
    star.write_text(star.read_text().replace("2@a.mrcs 1 8000 8000", "2@a.mrcs 1 nan 8000"))
    with pytest.raises(InputError, match=r"ctf.star, particle 2: _rlnDefocusU is not a finite number"):
        particles.ctf_priors(particles.particle_table(star), star)
    table = particles.particle_table(star).drop(columns=["rlnVoltage"])
    with pytest.raises(InputError, match=r"_rlnVoltage needed for simulator.priors_from_dataset"):
        particles.ctf_priors(table, star)


def write_stack(path, images, pixel_size_A=1.0, volume=False):
    with mrcfile.new(path, overwrite=True) as mrc:
        mrc.set_data(np.asarray(images, np.float32))
        if not volume:
            mrc.set_image_stack()
        mrc.voxel_size = pixel_size_A


def star_with(path, names, **columns):
    write_star(path, {"particles": pd.DataFrame({"rlnImageName": names, **columns})})
    return path


def stack_of(n, box=16, seed=0):
    return np.random.default_rng(seed).normal(size=(n, box, box)).astype(np.float32)


def test_relion30_single_unnamed_block(tmp_path):
    write_stack(tmp_path / "a.mrcs", stack_of(2))
    star = tmp_path / "r30.star"
    star.write_text(
        "data_\n\nloop_\n_rlnImageName\n_rlnDetectorPixelSize\n_rlnMagnification\n"
        "2@a.mrcs 14.0 100000\n1@a.mrcs 14.0 100000\n"
    )
    found = particles.load_particles(star)
    np.testing.assert_allclose(found.table["pixel_size_A"], 1.4)
    assert found.table["optics_group"].tolist() == ["1", "1"]
    images = particles.ParticleSource(found.table, star).read([0, 1])
    np.testing.assert_array_equal(images, stack_of(2)[[1, 0]])


def test_relion31_particles_before_optics_and_relion5_version_kept(tmp_path):
    write_stack(tmp_path / "a.mrcs", stack_of(3))
    star = tmp_path / "r5.star"
    star.write_text(
        "# version 50001\n\ndata_particles\n\nloop_\n_rlnImageName #1\n_rlnOpticsGroup #2\n"
        "3@a.mrcs 2\n3@a.mrcs 2\n1@a.mrcs 2\n\n"
        "# version 50001\n\ndata_optics\n\nloop_\n_rlnOpticsGroup #1\n_rlnOpticsGroupName #2\n"
        "_rlnImagePixelSize #3\n_rlnImageSize #4\n2 opticsGroup2 0.83 16\n"
    )
    found = particles.load_particles(star)
    assert found.version == 50001 and found.block_name == "particles"
    np.testing.assert_allclose(found.table["pixel_size_A"], 0.83)
    source = particles.ParticleSource(found.table, star)
    np.testing.assert_array_equal(source.read([0, 1, 2]), stack_of(3)[[2, 2, 0]])  # repeated, unsorted
    out = tmp_path / "shard.star"
    write_star(out, particles.shard_blocks(found, np.array([2])), found.version)
    assert out.read_text().startswith("# version 50001")
    back = read_star(out)
    assert back["particles"]["rlnImageName"].tolist() == ["1@a.mrcs"]
    assert list(back["particles"].columns) == ["rlnImageName", "rlnOpticsGroup"]  # no reader columns
    assert list(back) == ["particles", "optics"]


def test_lenient_stacks_volume_flag_zero_voxel_extended_header(tmp_path, data_dir):
    images = stack_of(4)
    write_stack(tmp_path / "vol.mrcs", images, volume=True)  # ispg 1: a "volume"
    with mrcfile.new(tmp_path / "ext.mrcs") as mrc:
        mrc.set_data(images)
        mrc.set_extended_header(np.zeros(7, dtype=[("x", "<f4", (8,))]))  # 224 bytes, FEI-like
        mrc.voxel_size = 0.0
    write_stack(tmp_path / "three.mrcs", images[:3])
    shutil.copy(data_dir / "hand.5.mrcs", tmp_path / "hand.mrcs")  # no MAP stamp
    names = ["2@vol.mrcs", "4@ext.mrcs", "3@three.mrcs", "5@hand.mrcs"]
    star = star_with(tmp_path / "lenient.star", names, rlnImagePixelSize=[1.0, 1.0, 1.0, 2.0])  # hand: own group
    source = particles.ParticleSource(particles.load_particles(star).table, star)
    assert [h.n_images for h in source.headers] == [4, 5, 3, 4]
    ext = source.headers[0]
    assert ext.path.name == "ext.mrcs" and ext.offset == 1024 + 224 and ext.pixel_size_A == 0.0
    got = source.read([0, 1, 2])
    np.testing.assert_array_equal(got, images[[1, 3, 2]])
    with mrcfile.open(data_dir / "hand.5.mrcs", permissive=True) as mrc:
        np.testing.assert_array_equal(source.read([3])[0], mrc.data[4])
    past = star_with(tmp_path / "past.star", ["4@three.mrcs"], rlnImagePixelSize=1.0)
    with pytest.raises(InputError, match=r"past.star, particle 1: _rlnImageName index 4 is past the end of .*three"):
        particles.ParticleSource(particles.load_particles(past).table, past)


def test_image_size_disagreement_warns_and_trusts_the_stack(tmp_path, caplog):
    write_stack(tmp_path / "a.mrcs", stack_of(2, box=20))
    star = tmp_path / "size.star"
    write_star(
        star,
        {
            "optics": pd.DataFrame({"rlnOpticsGroup": [1], "rlnImagePixelSize": [1.0], "rlnImageSize": [24]}),
            "particles": pd.DataFrame({"rlnImageName": ["1@a.mrcs", "2@a.mrcs"], "rlnOpticsGroup": [1, 1]}),
        },
    )
    with caplog.at_level("WARNING"):
        source = particles.ParticleSource(particles.load_particles(star).table, star)
    assert "_rlnImageSize says 24 px but the stacks hold 20 px" in caplog.text
    assert source.read([1]).shape == (1, 20, 20)


def test_cryosparc_export(tmp_path):
    folder = tmp_path / "P1" / "J12" / "extract"
    folder.mkdir(parents=True)
    write_stack(folder / "blobs.mrc", stack_of(3, box=24))
    fields = [
        ("uid", "<u8"),
        ("blob/path", "S40"),
        ("blob/idx", "<u4"),
        ("blob/shape", "<u4", (2,)),
        ("blob/psize_A", "<f4"),
        ("ctf/accel_kv", "<f4"),
        ("ctf/cs_mm", "<f4"),
        ("ctf/amp_contrast", "<f4"),
        ("ctf/df1_A", "<f4"),
        ("ctf/df2_A", "<f4"),
        ("ctf/df_angle_rad", "<f4"),
        ("ctf/phase_shift_rad", "<f4"),
    ]
    records = np.zeros(2, dtype=fields)
    records["uid"] = [11, 12]
    records["blob/path"] = [b">J12/extract/blobs.mrc", b">J12/extract/blobs.mrc"]
    records["blob/idx"] = [2, 0]
    records["blob/shape"] = 24
    records["blob/psize_A"] = 1.25
    records["ctf/accel_kv"], records["ctf/cs_mm"], records["ctf/amp_contrast"] = 300, 2.7, 0.1
    records["ctf/df1_A"], records["ctf/df2_A"] = [15000, 9000], [14000, 9000]
    records["ctf/df_angle_rad"] = np.pi / 2
    cs = tmp_path / "P1" / "J20" / "particles.cs"
    cs.parent.mkdir()
    with open(cs, "wb") as handle:
        np.save(handle, records)
    found = particles.load_particles(cs)
    table = found.table
    assert table["rlnImageName"].tolist() == ["000003@J12/extract/blobs.mrc", "000001@J12/extract/blobs.mrc"]
    np.testing.assert_allclose(table["pixel_size_A"], 1.25)
    np.testing.assert_allclose(table["rlnDefocusAngle"], 90.0, rtol=1e-6)
    source = particles.ParticleSource(table, cs)  # resolved from the project folder above the job
    np.testing.assert_array_equal(source.read([0, 1]), stack_of(3, box=24)[[2, 0]])
    assert particles.ctf_priors(table, cs)["defocus_range_A"] == [9000.0, 14500.0]
    with open(tmp_path / "bad.cs", "wb") as handle:
        np.save(handle, np.zeros(2, dtype=[("uid", "<u8")]))
    with pytest.raises(InputError, match=r"bad.cs: field\(s\) blob/path, blob/idx missing"):
        particles.load_particles(tmp_path / "bad.cs")


def test_select_keeps_matching_particles_and_shards_split_contiguously(tmp_path):
    star = star_with(
        tmp_path / "c.star",
        [f"{i}@a.mrcs" for i in range(1, 7)],
        rlnImagePixelSize=1.0,
        rlnClassNumber=[1, 2, 3, 1, 2, 3],
    )
    found = particles.load_particles(star, select={"rlnClassNumber": [1, 3]})
    assert found.table["rlnImageName"].tolist() == ["1@a.mrcs", "3@a.mrcs", "4@a.mrcs", "6@a.mrcs"]
    assert len(particles.load_particles(star, select={"_rlnClassNumber": 2}).table) == 2
    with pytest.raises(InputError, match=r"c.star: column _rlnGroupName \(select\) not found"):
        particles.load_particles(star, select={"rlnGroupName": ["g1"]})
    with pytest.raises(InputError, match="no particle matches"):
        particles.load_particles(star, select={"rlnClassNumber": [9]})
    shards = starindex.shard_rows(7, 3)
    assert [list(s) for s in shards] == [[0, 1, 2], [3, 4], [5, 6]]


def test_concatenated_shards_read_like_the_whole(tmp_path):
    names = [f"{i}@a.mrcs" for i in range(1, 6)]
    blocks = {
        "optics": pd.DataFrame({"rlnOpticsGroup": [1], "rlnImagePixelSize": [1.0]}),
        "particles": pd.DataFrame(
            {"rlnImageName": names, "rlnOpticsGroup": 1, "cryoflowThetaMeanAngst": np.linspace(-2, 2, 5)}
        ),
    }
    paths = []
    for i, rows in enumerate(starindex.shard_rows(5, 2)):
        paths.append(tmp_path / f"s{i}.star")
        part = dict(blocks, particles=blocks["particles"].iloc[rows].reset_index(drop=True))
        write_star(paths[-1], part, version=50001)
    concatenate_star(paths, tmp_path / "all.star")
    back = read_star(tmp_path / "all.star")
    assert star_version(tmp_path / "all.star") == 50001
    pd.testing.assert_frame_equal(back["particles"], blocks["particles"])
    pd.testing.assert_frame_equal(back["optics"], blocks["optics"])


def test_bad_inputs_name_file_and_field(tmp_path, relion_job):
    no_names = tmp_path / "nonames.star"
    no_names.write_text("data_particles\n\nloop_\n_rlnDefocusU #1\n10000\n")
    with pytest.raises(InputError, match=r"nonames.star: no data block has the column _rlnImageName"):
        particles.particle_table(no_names)
    with pytest.raises(InputError, match="non-integer index"):
        particles.parse_image_name("x@stack.mrcs", "x.star", 3)
    table = particles.particle_table(relion_job)
    past_end = table.copy()
    past_end.loc[2, "rlnImageName"] = past_end.loc[2, "rlnImageName"].replace("000003@", "000009@")
    with pytest.raises(InputError, match="particle 3: _rlnImageName index 9 is past the end"):
        particles.ParticleSource(past_end, relion_job)
    missing = table.copy()
    missing["rlnImageName"] = "1@Extract/job133/Micrographs/missing.mrcs"
    with pytest.raises(
        InputError,
        match=r"particles.star: stack 'Extract/job133/Micrographs/missing.mrcs' in "
        r"_rlnImageName not found",
    ):
        particles.ParticleSource(missing, relion_job)
    no_pixel = star_with(tmp_path / "nopixel.star", ["1@a.mrcs"])
    with pytest.raises(InputError, match=r"nopixel.star: pixel size not found"):
        particles.particle_table(no_pixel)
    (tmp_path / "garbage.mrcs").write_bytes(b"not an mrc file" * 3)
    garbage = star_with(tmp_path / "garbage.star", ["1@garbage.mrcs"], rlnImagePixelSize=1.0)
    with pytest.raises(InputError, match=r"garbage.mrcs: unreadable MRC header"):
        particles.ParticleSource(particles.particle_table(garbage), garbage)
    write_stack(tmp_path / "big.mrcs", stack_of(1, box=32))
    write_stack(tmp_path / "small.mrcs", stack_of(1, box=16))
    mixed = star_with(tmp_path / "mixed.star", ["1@big.mrcs", "1@small.mrcs"], rlnImagePixelSize=1.0)
    with pytest.raises(
        InputError,
        match=r"mixed.star: optics group 1 mixes box sizes: particle 2 .*small.mrcs\) "
        r"is 16 px, particle 1 .*big.mrcs\) is 32 px",
    ):
        particles.ParticleSource(particles.particle_table(mixed), mixed)
    optics = tmp_path / "optics.star"
    write_star(
        optics,
        {
            "optics": pd.DataFrame({"rlnOpticsGroup": [1], "rlnImagePixelSize": [1.0]}),
            "particles": pd.DataFrame({"rlnImageName": ["1@a.mrcs"], "rlnOpticsGroup": [2]}),
        },
    )
    with pytest.raises(InputError, match=r"optics.star: _rlnOpticsGroup 2 of the particles is not in data_optics"):
        particles.particle_table(optics)


def test_a_shard_source_numbers_particles_as_the_star_file_does(tmp_path):
    images = stack_of(6)
    images[4, 0, 0] = np.inf
    write_stack(tmp_path / "s.mrcs", images)
    star = star_with(tmp_path / "s.star", [f"{i}@s.mrcs" for i in range(1, 7)], rlnImagePixelSize=1.0)
    table = particles.load_particles(star).table
    rows = starindex.shard_rows(6, 2)[1]  # particles 4 to 6
    shard = particles.ParticleSource(table.iloc[rows], star, first_row=rows[0])
    np.testing.assert_array_equal(shard.read([0]), images[[3]])
    with pytest.raises(InputError, match=r"particle 5 of .*s.star \(_rlnImageName 5@s.mrcs\) has NaN or inf"):
        shard.read([0, 1])
