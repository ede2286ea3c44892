import mrcfile
import numpy as np
import pandas as pd
import pytest

from cryoflow.errors import InputError
from cryoflow.io import particles
from cryoflow.io.star import write_star
from cryoflow.physics import preprocess, whitening
from cryoflow.physics.whitening import estimate_noise_power, radial_power, whiten


def band_limited_image(box, cutoff, seed=0):
    rng = np.random.default_rng(seed)
    spectrum = np.fft.fft2(rng.normal(size=(box, box)))
    f = np.fft.fftfreq(box)
    spectrum[np.sqrt(f[:, None] ** 2 + f[None, :] ** 2) > cutoff] = 0
    return np.fft.ifft2(spectrum).real[None]


def test_band_limited_image_survives_down_and_up_sampling():
    image = band_limited_image(128, 0.2)
    down, pixel = preprocess.fourier_crop(image, 1.0, 2.0)
    assert down.shape == (1, 64, 64) and pixel == 2.0
    up, pixel_up = preprocess.fourier_crop(down, 2.0, 1.0)
    assert pixel_up == 1.0
    np.testing.assert_allclose(up, image, atol=1e-4 * np.abs(image).max())
    # values at shared sample points are kept
    np.testing.assert_allclose(down[0], image[0, ::2, ::2], atol=1e-4 * np.abs(image).max())


def test_crop_or_pad_keeps_the_centre():
    image = np.zeros((1, 10, 10), np.float32)
    image[0, 5, 5] = 1.0
    assert preprocess.crop_or_pad(image, 6)[0, 3, 3] == 1.0
    assert preprocess.crop_or_pad(image, 16)[0, 8, 8] == 1.0


def coloured_noise(n, box, seed=0):
    rng = np.random.default_rng(seed)
    white = rng.normal(size=(n, box, box))
    radius = whitening.radial_index(box)
    shape = 1.0 / np.sqrt(1.0 + (radius / 6.0) ** 2) + 0.2  # strongly coloured: ~25× power range
    return np.fft.irfft2(np.fft.rfft2(white) * shape, s=(box, box))


def test_whitened_coloured_noise_has_flat_spectrum():
    noise = coloured_noise(2000, 64)
    before = radial_power(noise)[1:32]
    assert before.max() / before.min() > 8
    power = estimate_noise_power(noise[:1000], mask_radius_px=20)
    white = whiten(noise[1000:], power)
    after = radial_power(white)[1:32]
    assert np.abs(after / after.mean() - 1).max() < 0.05


def test_mask_leakage_correction_removes_low_frequency_bias():
    """Without the correction the masked estimate underestimates the steep low-frequency power."""
    noise = coloured_noise(1000, 64, seed=1)
    truth = radial_power(noise)
    corrected = estimate_noise_power(noise, mask_radius_px=24)
    naive = estimate_noise_power(noise, mask_radius_px=24, iterations=0)
    assert abs(naive[1] / truth[1] - 1) > 0.1
    assert abs(corrected[1] / truth[1] - 1) < 0.07
    np.testing.assert_allclose(corrected[2:8], truth[2:8], rtol=0.02)
    assert np.abs(naive[2:8] / truth[2:8] - 1).max() > 0.02


def test_preprocess_writes_normalized_stack_on_training_grid(relion_job, tmp_path):
    found = particles.load_particles(relion_job)
    source = particles.ParticleSource(found.table, relion_job)
    spectra = preprocess.estimate_noise_spectra(source, 64, 5.612, mask_radius_A=150.0, noise_images=5, chunk=2)
    out = tmp_path / "pre.mrcs"
    assert len(preprocess.preprocess(source, out, 64, 5.612, spectra, chunk=2)) == 5
    with mrcfile.open(out) as mrc:
        assert mrc.data.shape == (5, 64, 64)
        assert mrc.voxel_size.x == pytest.approx(5.612, rel=1e-4)
        np.testing.assert_allclose(mrc.data.mean(axis=(1, 2)), 0, atol=1e-4)
        np.testing.assert_allclose(mrc.data.std(axis=(1, 2)), 1, atol=1e-3)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".pre")] == []


def test_particles_are_normalized_exactly_as_training_images():
    import torch

    from cryoflow.physics import simulator

    images = np.random.default_rng(2).normal(3.0, 5.0, size=(4, 16, 16)).astype(np.float32)
    np.testing.assert_array_equal(whitening.normalize(images), simulator.normalize(torch.from_numpy(images)).numpy())
    assert np.isclose(whitening.normalize(images)[0].std(ddof=1), 1.0, atol=1e-5)
    blank = whitening.normalize(np.full((1, 8, 8), 7.0, np.float32))
    assert np.all(blank == 0.0)


def write_stack(path, images, pixel_size_A):
    with mrcfile.new(path, overwrite=True) as mrc:
        mrc.set_data(np.asarray(images, np.float32))
        mrc.set_image_stack()
        mrc.voxel_size = pixel_size_A


def gaussian_blob(box, pixel_size_A, sigma_A=6.0):
    x = (np.arange(box) - box // 2) * pixel_size_A
    return np.exp(-(x[:, None] ** 2 + x[None, :] ** 2) / (2 * sigma_A**2))


def two_group_source(tmp_path, n=4):
    """Optics group 1: 1.0 Å, 96 px; group 2: 1.5 Å, 64 px; the same physical blob in every image."""
    write_stack(tmp_path / "g1.mrcs", np.repeat(gaussian_blob(96, 1.0)[None], n, 0), 1.0)
    write_stack(tmp_path / "g2.mrcs", np.repeat(gaussian_blob(64, 1.5)[None], n, 0), 1.5)
    star = tmp_path / "two.star"
    names = [f"{i + 1}@g1.mrcs" for i in range(n)] + [f"{i + 1}@g2.mrcs" for i in range(n)]
    blocks = {
        "optics": pd.DataFrame({"rlnOpticsGroup": [1, 2], "rlnImagePixelSize": [1.0, 1.5], "rlnImageSize": [96, 64]}),
        "particles": pd.DataFrame({"rlnImageName": names, "rlnOpticsGroup": [1] * n + [2] * n}),
    }
    write_star(star, blocks)
    found = particles.load_particles(star)
    return particles.ParticleSource(found.table, star)


def test_optics_groups_of_different_pixel_and_box_sizes_meet_on_one_grid(tmp_path):
    source = two_group_source(tmp_path)
    assert source.groups() == ["1", "2"]
    out = tmp_path / "pre.mrcs"
    assert len(preprocess.preprocess(source, out, 40, 2.0, noise_spectra=None, chunk=3)) == 8
    with mrcfile.open(out) as mrc:
        assert mrc.data.shape == (8, 40, 40) and mrc.is_image_stack()
        assert mrc.voxel_size.x == pytest.approx(2.0)
        np.testing.assert_allclose(mrc.data[0], mrc.data[7], atol=2e-3)
        expected = whitening.normalize(gaussian_blob(40, 2.0)[None])[0]
        np.testing.assert_allclose(mrc.data[0], expected, atol=2e-3)
        assert mrc.header.dmax == pytest.approx(mrc.data.max()) and mrc.header.rms == pytest.approx(1.0, abs=1e-3)


def test_whitening_in_the_pipeline_flattens_coloured_noise_of_each_group(tmp_path):
    box = 64
    noise = coloured_noise(600, box, seed=3).astype(np.float32)
    write_stack(tmp_path / "noise.mrcs", noise, 2.0)
    star = tmp_path / "noise.star"
    write_star(
        star,
        {
            "particles": pd.DataFrame(
                {"rlnImageName": [f"{i + 1}@noise.mrcs" for i in range(600)], "rlnImagePixelSize": 2.0}
            )
        },
    )
    found = particles.load_particles(star)
    source = particles.ParticleSource(found.table, star)
    spectra = preprocess.estimate_noise_spectra(source, box, 2.0, mask_radius_A=40.0, noise_images=300, chunk=128)
    assert list(spectra) == ["1"]
    path = tmp_path / "noise.tsv"
    preprocess.write_noise_spectra(path, spectra, box, 2.0)
    back = preprocess.read_noise_spectra(path)
    np.testing.assert_allclose(back["1"], spectra["1"], rtol=1e-6)
    out = tmp_path / "white.mrcs"
    preprocess.preprocess(source, out, box, 2.0, noise_spectra=back, rows=np.arange(300, 600), chunk=100)
    with mrcfile.open(out) as mrc:
        after = radial_power(mrc.data)[1:32]
    assert np.abs(after / after.mean() - 1).max() < 0.06


def test_bad_pixels_stop_preprocessing_and_leave_no_output(tmp_path):
    images = np.random.default_rng(0).normal(size=(6, 32, 32)).astype(np.float32)
    images[4, 3, 3] = np.nan
    write_stack(tmp_path / "s.mrcs", images, 1.0)
    star = tmp_path / "nan.star"
    write_star(
        star,
        {"particles": pd.DataFrame({"rlnImageName": [f"{i + 1}@s.mrcs" for i in range(6)], "rlnImagePixelSize": 1.0})},
    )
    source = particles.ParticleSource(particles.load_particles(star).table, star)
    out = tmp_path / "out.mrcs"
    with pytest.raises(InputError, match=r"s.mrcs: particle 5 of .*nan.star \(_rlnImageName 5@s.mrcs\) has NaN"):
        preprocess.preprocess(source, out, 32, 1.0, chunk=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nan.star", "s.mrcs"]
