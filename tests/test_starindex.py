"""The DAG's view of a STAR file (standard library only) agrees row for row with the particle stage's."""

import numpy as np
import pandas as pd
import pytest
from particle_fuzzer import partition

from cryoflow.errors import InputError
from cryoflow.io import particles, starindex
from cryoflow.io.star import write_star


def test_relion31_index_matches_the_particle_table(relion_job):
    index = starindex.index_star(relion_job)
    table = particles.load_particles(relion_job).table
    assert len(index) == len(table)
    assert index.stack_names == [n.split("@", 1)[1] for n in table["rlnImageName"]]
    assert index.stacks() == ["Extract/job133/Micrographs/relion31.mrcs"]
    assert partition(index.groups) == partition(table["optics_group"])
    assert index.pixel_sizes_A == tuple(sorted(set(table["pixel_size_A"])))  # from the optics block


def test_groups_of_a_relion30_file_follow_its_pixel_sizes(tmp_path):
    """No _rlnOpticsGroup: one group per pixel size, from the detector pixel and magnification columns."""
    star = tmp_path / "r30.star"
    rows = ["1@a.mrcs 14.0 100000", "1@b.mrcs 14.0 50000", "2@a.mrcs 14.0 100000", "3@a.mrcs 14.0 100000.0"]
    star.write_text("data_\n\nloop_\n_rlnImageName\n_rlnDetectorPixelSize\n_rlnMagnification\n" + "\n".join(rows))
    index = starindex.index_star(star)
    table = particles.particle_table(star)
    assert partition(index.groups) == partition(particles.optics_groups(table)) == {(0, 2, 3), (1,)}
    assert index.stacks() == ["a.mrcs", "b.mrcs"]
    assert partition(starindex.index_star(star, pixel_size_A=1.0).groups) == {(0, 1, 2, 3)}
    assert index.pixel_sizes_A == tuple(sorted(set(table["pixel_size_A"]))) == (1.4, 2.8)
    assert starindex.index_star(star, pixel_size_A=1.0).pixel_sizes_A == (1.0,)


def test_select_keeps_the_rows_the_particle_stage_keeps(tmp_path):
    names = [f"{i}@s{i % 3}.mrcs" for i in range(1, 10)]
    star = tmp_path / "c.star"
    columns = {"rlnImageName": names, "rlnClassNumber": [1, 2, 3, 1, 2, 3, 1, 2, 3], "rlnGroupName": list("aabbccaab")}
    write_star(star, {"particles": pd.DataFrame(columns)})
    for select in ({"rlnClassNumber": [1, 3]}, {"_rlnClassNumber": 2}, {"rlnGroupName": ["a", "c"]}):
        index = starindex.index_star(star, select)
        kept = particles.select_particles(pd.DataFrame(columns), select, star)
        assert index.stack_names == [n.split("@")[1] for n in kept["rlnImageName"]], select
    with pytest.raises(InputError, match=r"c.star: column _rlnMissing \(select\) not found"):
        starindex.index_star(star, {"rlnMissing": [1]})
    with pytest.raises(InputError, match="no particle matches"):
        starindex.index_star(star, {"rlnClassNumber": [7]})


def test_a_row_with_a_missing_field_names_its_line(tmp_path):
    star = tmp_path / "short.star"
    star.write_text("data_particles\n\nloop_\n_rlnImageName #1\n_rlnOriginX #2\n1@a.mrcs 0.5\n2@a.mrcs\n")
    with pytest.raises(InputError, match=r"short.star, line 7: 1 fields where data_particles has 2 columns"):
        starindex.index_star(star)


def test_quoted_values_stay_one_field(tmp_path):
    star = tmp_path / "q.star"
    star.write_text('data_particles\n\nloop_\n_rlnImageName\n_rlnGroupName\n"1@my stacks/a.mrcs" "group 1"\n')
    assert starindex.index_star(star).stack_names == ["my stacks/a.mrcs"]


def test_shards_and_samples_are_those_the_jobs_take():
    for n, k in ((7, 3), (10, 4), (5, 5), (100, 7)):
        assert [list(r) for r in starindex.shard_rows(n, k)] == [a.tolist() for a in np.array_split(np.arange(n), k)]
    rows = starindex.sample_rows(1000, 50, seed=3)
    assert len(rows) == 50 == len(set(rows)) and rows == sorted(rows) and rows == starindex.sample_rows(1000, 50, 3)
    assert starindex.sample_rows(5, 50, 3) == [0, 1, 2, 3, 4]


def test_noise_rows_take_each_group_alike_under_any_labels():
    groups = ["1"] * 30 + ["2"] * 5 + ["1"] * 30
    picked = starindex.noise_rows(groups, 10, seed=4)
    assert {g: len(r) for g, r in picked.items()} == {"1": 10, "2": 5}
    assert all(groups[r] == g for g, rows in picked.items() for r in rows)
    relabelled = starindex.noise_rows(["x" if g == "1" else "y" for g in groups], 10, seed=4)
    assert sorted(picked.values()) == sorted(relabelled.values())


def test_a_cryosparc_export_indexes_like_the_particle_stage_reads_it(tmp_path):
    import particle_fuzzer

    base = particle_fuzzer.make_dataset(tmp_path)
    index = starindex.index_cs(base["folder"] / "p.cs")
    found = particles.load_particles(base["folder"] / "p.cs")
    assert index.stack_names == [n.split("@", 1)[1] for n in found.table["rlnImageName"]]
    assert partition(index.groups) == partition(found.table["optics_group"])
    assert index.pixel_sizes_A == tuple(sorted(set(found.table["pixel_size_A"])))
    (tmp_path / "bad.cs").write_bytes(b"not numpy")
    with pytest.raises(InputError, match="bad.cs: not a cryoSPARC particle export"):
        starindex.index_cs(tmp_path / "bad.cs")
