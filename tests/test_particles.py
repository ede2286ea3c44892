import shutil

import mrcfile
import numpy as np
import pandas as pd
import pytest

from cryoflow import particles
from cryoflow.fileio import InputError

STACK_NAME = "relion31.mrcs"


@pytest.fixture()
def relion_job(tmp_path, data_dir):
    """The shared RELION 3.1 sample laid out as a real job folder: project/Extract/job133/..."""
    job = tmp_path / "project" / "Extract" / "job133"
    (job / "Micrographs").mkdir(parents=True)
    shutil.copy(data_dir / "relion31.mrcs", job / "Micrographs" / STACK_NAME)
    text = (data_dir / "relion31.star").read_text()
    (job / "particles.star").write_text(text.replace("@relion31.mrcs", "@Extract/job133/Micrographs/relion31.mrcs"))
    return job / "particles.star"


def test_relion31_optics_merged_and_stacks_resolved_from_project_root(relion_job):
    table = particles.particle_table(relion_job)
    assert len(table) == 5
    np.testing.assert_allclose(table["pixel_size_A"], 2.806)
    source = particles.ParticleSource(table, relion_job)
    assert source.paths[0].name == STACK_NAME
    images = source.read(np.array([4, 0]))
    assert images.shape == (2, 256, 256) and images.dtype == np.float32
    with mrcfile.mmap(source.paths[0], permissive=True) as mrc:
        np.testing.assert_array_equal(images[0], mrc.data[4])


def test_stack_found_by_basename_and_datadir(tmp_path, data_dir):
    shutil.copy(data_dir / "relion31.mrcs", tmp_path / STACK_NAME)
    shutil.copy(data_dir / "relion31.star", tmp_path / "moved.star")
    assert particles.resolve_stack_path("Extract/job133/Micrographs/" + STACK_NAME, tmp_path / "moved.star") == (
        tmp_path / STACK_NAME
    )
    other = tmp_path / "elsewhere"
    other.mkdir()
    found = particles.resolve_stack_path("Extract/x/" + STACK_NAME, other / "p.star", datadir=tmp_path)
    assert found == tmp_path / STACK_NAME


def test_relion30_pixel_size_from_detector_and_magnification(tmp_path):
    star = tmp_path / "old.star"
    star.write_text(
        "data_images\n\nloop_\n_rlnImageName #1\n_rlnDetectorPixelSize #2\n_rlnMagnification #3\n"
        "1@a.mrcs 5.0 50000\n2@a.mrcs 5.0 50000\n"
    )
    table = particles.particle_table(star)
    np.testing.assert_allclose(table["pixel_size_A"], 1.0)


def test_bad_inputs_name_file_and_field(tmp_path, relion_job):
    no_names = tmp_path / "nonames.star"
    no_names.write_text("data_particles\n\nloop_\n_rlnDefocusU #1\n10000\n")
    with pytest.raises(InputError, match="_rlnImageName"):
        particles.particle_table(no_names)
    with pytest.raises(InputError, match="not of the form"):
        particles.parse_image_name("stack.mrcs", "x.star", 3)
    table = particles.particle_table(relion_job)
    past_end = table.copy()
    past_end.loc[2, "rlnImageName"] = past_end.loc[2, "rlnImageName"].replace("000003@", "000009@")
    with pytest.raises(InputError, match="particle 3: _rlnImageName index 9 is past the end"):
        particles.ParticleSource(past_end, relion_job)
    missing = table.copy()
    missing["rlnImageName"] = "1@Extract/job133/Micrographs/missing.mrcs"
    with pytest.raises(InputError, match="missing.mrcs"):
        particles.ParticleSource(missing, relion_job)
    no_pixel = tmp_path / "nopixel.star"
    no_pixel.write_text("data_particles\n\nloop_\n_rlnImageName #1\n1@a.mrcs\n")
    with pytest.raises(InputError, match="pixel size"):
        particles.particle_table(no_pixel)


def band_limited_image(box, cutoff, seed=0):
    rng = np.random.default_rng(seed)
    spectrum = np.fft.fft2(rng.normal(size=(box, box)))
    f = np.fft.fftfreq(box)
    spectrum[np.sqrt(f[:, None] ** 2 + f[None, :] ** 2) > cutoff] = 0
    return np.fft.ifft2(spectrum).real[None]


def test_band_limited_image_survives_down_and_up_sampling():
    image = band_limited_image(128, 0.2)
    down, pixel = particles.fourier_crop(image, 1.0, 2.0)
    assert down.shape == (1, 64, 64) and pixel == 2.0
    up, pixel_up = particles.fourier_crop(down, 2.0, 1.0)
    assert pixel_up == 1.0
    np.testing.assert_allclose(up, image, atol=1e-4 * np.abs(image).max())
    # values at shared sample points are kept
    np.testing.assert_allclose(down[0], image[0, ::2, ::2], atol=1e-4 * np.abs(image).max())


def test_crop_or_pad_keeps_the_centre():
    image = np.zeros((1, 10, 10), np.float32)
    image[0, 5, 5] = 1.0
    assert particles.crop_or_pad(image, 6)[0, 3, 3] == 1.0
    assert particles.crop_or_pad(image, 16)[0, 8, 8] == 1.0


def coloured_noise(n, box, seed=0):
    rng = np.random.default_rng(seed)
    white = rng.normal(size=(n, box, box))
    radius = particles.radial_index(box)
    shape = 1.0 / np.sqrt(1.0 + (radius / 6.0) ** 2) + 0.2  # strongly coloured: ~25× power range
    return np.fft.irfft2(np.fft.rfft2(white) * shape, s=(box, box))


def test_whitened_coloured_noise_has_flat_spectrum():
    noise = coloured_noise(2000, 64)
    before = particles.radial_power(noise)[1:32]
    assert before.max() / before.min() > 8
    power = particles.estimate_noise_power(noise[:1000], mask_radius_px=20)
    white = particles.whiten(noise[1000:], power)
    after = particles.radial_power(white)[1:32]
    assert np.abs(after / after.mean() - 1).max() < 0.05


def test_mask_leakage_correction_removes_low_frequency_bias():
    """Without the correction the masked estimate underestimates the steep low-frequency power."""
    noise = coloured_noise(1000, 64, seed=1)
    truth = particles.radial_power(noise)
    corrected = particles.estimate_noise_power(noise, mask_radius_px=24)
    naive = particles.estimate_noise_power(noise, mask_radius_px=24, iterations=0)
    assert abs(naive[1] / truth[1] - 1) > 0.1
    assert abs(corrected[1] / truth[1] - 1) < 0.07
    np.testing.assert_allclose(corrected[2:8], truth[2:8], rtol=0.02)
    assert np.abs(naive[2:8] / truth[2:8] - 1).max() > 0.02


def test_preprocess_writes_normalized_stack_on_training_grid(relion_job, tmp_path):
    table = particles.particle_table(relion_job)
    source = particles.ParticleSource(table, relion_job)
    out = tmp_path / "pre.mrcs"
    facts = particles.preprocess(source, out, 64, 5.612, mask_radius_A=150.0, noise_images=5, chunk=2)
    assert facts["n_particles"] == 5
    with mrcfile.open(out) as mrc:
        assert mrc.data.shape == (5, 64, 64)
        assert mrc.voxel_size.x == pytest.approx(5.612, rel=1e-4)
        np.testing.assert_allclose(mrc.data.mean(axis=(1, 2)), 0, atol=1e-4)
        np.testing.assert_allclose(mrc.data.std(axis=(1, 2)), 1, atol=1e-3)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".pre")] == []


def test_star_round_trip(tmp_path):
    blocks = {
        "optics": pd.DataFrame({"rlnOpticsGroup": [1], "rlnImagePixelSize": [1.5]}),
        "particles": pd.DataFrame({"rlnImageName": ["1@a.mrcs", "2@a.mrcs"], "rlnOpticsGroup": [1, 1],
                                   "cryoflowThetaMeanAngst": [-1.25, 3.5]}),
    }  # fmt: skip
    path = tmp_path / "out.star"
    particles.write_star(path, blocks)
    assert path.read_text().startswith("# version 30001")
    back = particles.read_star(path)
    pd.testing.assert_frame_equal(back["particles"], blocks["particles"])
    assert particles.particle_table(path)["pixel_size_A"].tolist() == [1.5, 1.5]


def test_particles_are_normalized_exactly_as_training_images():
    import torch

    from cryoflow import simulator

    images = np.random.default_rng(2).normal(3.0, 5.0, size=(4, 16, 16)).astype(np.float32)
    np.testing.assert_array_equal(particles.normalize(images), simulator.normalize(torch.from_numpy(images)).numpy())
    assert np.isclose(particles.normalize(images)[0].std(ddof=1), 1.0, atol=1e-5)
    blank = particles.normalize(np.full((1, 8, 8), 7.0, np.float32))
    assert np.all(blank == 0.0)


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
    with pytest.raises(InputError, match=r"_rlnVoltage needed for simulator.priors_from_star"):
        particles.ctf_priors(table, star)
