"""cryoflow's particle reader against a peer: cryoDRGN (a published reader of the same formats, installed by
requirements-dev.txt), on every STAR/.cs/MRC fixture and on fuzzed files both read.

Compared: particle count, pixel size, CTF values and the raw pixels (before cryoflow's resampling,
whitening and normalization). Where the two disagree, the test says who is right and why.
"""

import logging
import shutil
import warnings

import numpy as np
import particle_fuzzer
import pytest
from workflow_helpers import check_result_group

from cryoflow.errors import InputError
from cryoflow.io import particles


def import_cryodrgn():
    """cryoDRGN's reader, imported without its logging set-up: importing the package calls
    logging.config.dictConfig, which disables every logger created before it (cryoflow's among them,
    silencing the warnings other tests check) and adds a root handler. Both are undone here."""
    loggers = logging.root.manager.loggerDict
    disabled = {name: log.disabled for name, log in loggers.items() if isinstance(log, logging.Logger)}
    handlers, level = list(logging.root.handlers), logging.root.level
    from cryodrgn.source import ImageSource
    from cryodrgn.starfile import Starfile

    for name, was in disabled.items():
        loggers[name].disabled = was
    logging.root.handlers[:] = handlers
    logging.root.setLevel(level)
    return ImageSource, Starfile


ImageSource, Starfile = import_cryodrgn()

CTF = [
    "rlnDefocusU",
    "rlnDefocusV",
    "rlnDefocusAngle",
    "rlnVoltage",
    "rlnSphericalAberration",
    "rlnAmplitudeContrast",
    "rlnPhaseShift",
]


def cryodrgn_read(path, datadir):
    source = ImageSource.from_file(str(path), datadir=str(datadir))
    return len(source), source.images(as_numpy=True)


def compare(path, datadir, expect_pixel=True):
    """Both readers on one file: same count, raw pixels, and (STAR files) pixel size and CTF values."""
    found = particles.load_particles(path)
    ours = particles.ParticleSource(found.table, path)
    n, images = cryodrgn_read(path, datadir)
    assert n == len(ours)
    np.testing.assert_array_equal(images, ours.read(np.arange(len(ours))))
    if path.suffix != ".star":
        return
    star = Starfile(str(path))
    if expect_pixel:
        np.testing.assert_allclose(star.apix, found.table["pixel_size_A"], rtol=1e-6)
    for column in CTF:
        theirs = star.get_optics_values("_" + column)
        if theirs is not None and column in found.table:
            np.testing.assert_allclose(theirs.astype(float), found.table[column].astype(float), rtol=1e-6)


def test_relion31_job_folder(relion_job):
    """Paths in the STAR file are relative to the RELION project (two folders up), as RELION writes them.
    cryoflow finds them by walking up from the STAR file; cryoDRGN needs the project root as datadir
    (without it, it looks beside the STAR file and fails; RELION's convention makes cryoflow right)."""
    compare(relion_job, relion_job.parents[2])
    with pytest.raises(Exception):  # noqa: B017 (cryoDRGN's own error type)
        cryodrgn_read(relion_job, relion_job.parent / "elsewhere")


def test_stack_without_map_stamp_and_a_relion30_file(tmp_path, data_dir):
    """hand.5.mrcs lacks the MAP stamp; a RELION 3.0 file states the pixel size as detector pixel (µm) and
    magnification. cryoDRGN finds no pixel size in a 3.0 file (Starfile.apix is None: it reads only
    _rlnImagePixelSize); RELION defines it as detector pixel · 10⁴ / magnification, which cryoflow uses."""
    shutil.copy(data_dir / "hand.5.mrcs", tmp_path)
    star = tmp_path / "r30.star"
    rows = "\n".join(f"{i}@hand.5.mrcs 14.0 100000 12000 11800 30 300 2.7 0.1" for i in (5, 1, 3))
    star.write_text(
        "data_\n\nloop_\n_rlnImageName\n_rlnDetectorPixelSize\n_rlnMagnification\n_rlnDefocusU\n"
        "_rlnDefocusV\n_rlnDefocusAngle\n_rlnVoltage\n_rlnSphericalAberration\n_rlnAmplitudeContrast\n" + rows + "\n"
    )
    compare(star, tmp_path, expect_pixel=False)
    assert Starfile(str(star)).apix is None
    np.testing.assert_allclose(particles.load_particles(star).table["pixel_size_A"], 1.4)


def test_fuzzer_fixtures_and_the_fuzzed_files_both_read(tmp_path):
    """The fuzzer's valid RELION 3.1, 3.0 and cryoSPARC files, then every fuzzed file cryoflow and the
    reference both read ('agrees'): cryoDRGN reads each the same, or refuses it."""
    base = particle_fuzzer.make_dataset(tmp_path / "base")
    for name in ("r31.star", "p.cs"):
        compare(base["folder"] / name, base["folder"])
    compare(base["folder"] / "r30.star", base["folder"], expect_pixel=False)
    kept, refused = 0, 0
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for case in range(150):
                work = tmp_path / "case"
                _, _, outcome, star = particle_fuzzer.run_case(base, work, 7_000_000 + case)
                if outcome != "agrees":
                    continue
                try:
                    compare(star, work, expect_pixel=star.name != "r30.star")
                    kept += 1
                except AssertionError:
                    raise
                except Exception:
                    refused += 1  # cryoDRGN stops on a file cryoflow and the reference read alike
    finally:
        logging.disable(logging.NOTSET)
    assert kept > 10, (kept, refused)


def test_results_written_back_to_cryosparc_read_in_cryosparc_tools_and_cryodrgn(tmp_path):
    """posterior.cs (cryoflow.io.cryosparc_results): the export's rows in the results' order, every input field,
    cryoflow's fields added; cryosparc-tools reads them, and cryoDRGN reads the same images from it."""
    from cryosparc.dataset import Dataset

    from cryoflow.io import cryosparc_results

    base = particle_fuzzer.make_dataset(tmp_path / "base")
    export = base["folder"] / "p.cs"
    table = particles.load_particles(export).table
    order = np.arange(len(table))[::-1][: len(table) - 1]  # reversed, one particle left out (a subset)
    results = table.iloc[order].assign(
        cryoflowThetaMeanAngst=np.linspace(-3, 3, len(order)),
        cryoflowThetaStdAngst=0.5,
        cryoflowParticleProbability=0.9,
    )
    out = base["folder"] / "posterior.cs"
    assert cryosparc_results.write_results(export, results, out) == len(order)
    source, written, raw = np.load(export), Dataset.load(str(out)), np.load(out)  # raw: the array on disk
    np.testing.assert_array_equal(written["uid"], source["uid"][order])
    for name in source.dtype.names:
        np.testing.assert_array_equal(raw[name], source[name][order])
    np.testing.assert_allclose(written["cryoflow/theta_mean_A"], np.linspace(-3, 3, len(order)), rtol=1e-6)
    assert set(written.fields()) == set(source.dtype.names) | {
        "cryoflow/theta_mean_A",
        "cryoflow/theta_std_A",
        "cryoflow/p_particle",
    }
    n, images = cryodrgn_read(out, base["folder"])
    _, everything = cryodrgn_read(export, base["folder"])
    assert n == len(order)
    np.testing.assert_array_equal(images, everything[order])
    with pytest.raises(InputError, match=r"p.cs: uid 999 of the results is not in this export"):
        cryosparc_results.write_results(export, results.assign(cryosparcUid=999), out)
    # the result group beside it, for cryoSPARC's Import Result Group: one result per slot, all in posterior.cs
    group = cryosparc_results.write_result_group(out, base["folder"] / "posterior.csg", "test")
    slots = {name.split("/")[0] for name in written.fields() if "/" in name}
    assert set(group["results"]) == slots and "cryoflow" in slots
    assert check_result_group(base["folder"] / "posterior.csg", len(order)) == group
    with pytest.raises(ValueError, match="lie beside it"):
        cryosparc_results.write_result_group(out, tmp_path / "elsewhere.csg", "test")
