import mrcfile
import numpy as np
import pandas as pd
import pytest
import torch
from simulation_helpers import make_priors

from cryoflow.demo import dataset as demo
from cryoflow.io import particles
from cryoflow.physics import theta as theta_module
from cryoflow.physics import whitening
from cryoflow.physics.projection import AtomTemplates
from cryoflow.physics.simulator import Simulator


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    base = torch.randn(60, 3) * 8
    templates = AtomTemplates(
        torch.stack([base * (1 + 0.03 * k) for k in range(-2, 3)]), torch.arange(-2.0, 3.0), torch.full((60,), 40.0)
    )
    sim = Simulator(
        templates,
        48,
        1.5,
        make_priors(theta_range_A=(-2.0, 2.0), mask_radius_A=30.0),
    )
    pops = [{"theta_A": -1.5, "sd_A": 0.2, "weight": 0.7}, {"theta_A": 1.0, "sd_A": 0.2, "weight": 0.3}]
    star = demo.make_dataset(sim, out, 400, pops, (0.1, 0.3), 4.0, 20.0, 150, seed=5)
    return out, star


def test_demo_is_a_relion31_extract_job(dataset):
    out, star = dataset
    assert star == out / "Extract" / "job007" / "particles.star"
    assert star.read_text().startswith("# version 30001")
    table = particles.particle_table(star)
    assert len(table) == 400 and np.allclose(table["pixel_size_A"], 1.5)
    assert table["rlnImageName"].iloc[150] == "000001@Extract/job007/Movies/mic_0002.mrcs"
    source = particles.ParticleSource(table, star)
    assert len(source.headers) == 3
    with mrcfile.open(source.headers[0].path) as mrc:
        assert mrc.data.shape == (150, 48, 48) and mrc.voxel_size.x == pytest.approx(1.5)


def test_demo_truth_follows_the_mixture(dataset):
    _, star = dataset
    table = particles.particle_table(star)
    theta = table["cryoflowTrueThetaAngst"].to_numpy()
    first = table["cryoflowTruePopulation"].to_numpy() == 1
    assert first.mean() == pytest.approx(0.7, abs=0.07)
    assert theta[first].mean() == pytest.approx(-1.5, abs=0.05)
    assert theta[~first].mean() == pytest.approx(1.0, abs=0.06)
    assert ((table["cryoflowTrueSNR"] >= 0.1) & (table["cryoflowTrueSNR"] <= 0.3)).all()


def test_demo_noise_is_coloured():
    noise = demo.coloured_noise(200, 64, 1.0, strength=4.0, corner_A=20.0, generator=torch.Generator().manual_seed(0))
    power = whitening.radial_power(noise.numpy())
    assert power[2] / power[30] > 3.0


def test_2d_mixture_and_its_truth_columns():
    pops = [{"theta_A": [-3.0, 1.0], "sd_A": 0.3, "weight": 0.6}, {"theta_A": [2.0, -1.5], "sd_A": 0.3, "weight": 0.4}]
    theta, component = demo.sample_mixture(4000, pops, [[-4.0, 4.0], [-2.0, 2.0]], np.random.default_rng(2))
    assert theta.shape == (4000, 2) and (component == 0).mean() == pytest.approx(0.6, abs=0.03)
    np.testing.assert_allclose(theta[component == 0].mean(axis=0), [-3.0, 1.0], atol=0.03)
    np.testing.assert_allclose(theta[component == 1].std(axis=0), [0.3, 0.3], rtol=0.1)
    assert theta[:, 1].min() >= -2.0  # clipped to the prior box
    table = pd.DataFrame(theta_module.true_theta_columns(theta))
    assert list(table) == ["cryoflowTrueTheta1Angst", "cryoflowTrueTheta2Angst"]
    np.testing.assert_array_equal(theta_module.true_theta(table), theta)
    one, _ = demo.sample_mixture(
        10, [{"theta_A": 1.0, "sd_A": 0.1, "weight": 1}], [-4.0, 4.0], np.random.default_rng(2)
    )
    assert one.shape == (10,) and theta_module.true_theta(pd.DataFrame({"cryoflowTrueThetaAngst": one})).shape == (10,)
