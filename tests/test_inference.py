import numpy as np
import pytest
from scipy import stats

from cryoflow.sbi.inference import (
    STAR_COLUMNS,
    posterior_grid,
    star_columns,
    summarize_grid_posterior,
    summarize_grid_posterior_2d,
    theta_grid,
)


def test_grid_summaries_of_a_gaussian_are_exact():
    grid = theta_grid((-10.0, 10.0), 2000)
    mu, sigma = np.array([-2.0, 1.5]), np.array([0.8, 2.0])
    log_density = -0.5 * ((grid[None] - mu[:, None]) / sigma[:, None]) ** 2
    out = summarize_grid_posterior(log_density, grid, 20000, np.random.default_rng(0))
    np.testing.assert_allclose(out["mean"], mu, atol=1e-3)
    np.testing.assert_allclose(out["std"], sigma, rtol=1e-3)
    np.testing.assert_allclose(out["q05"], mu + sigma * stats.norm.ppf(0.05), atol=0.01)
    np.testing.assert_allclose(out["q50"], mu, atol=0.01)
    np.testing.assert_allclose(out["q95"], mu + sigma * stats.norm.ppf(0.95), atol=0.01)
    np.testing.assert_allclose(out["map"], mu, atol=0.01)
    # inverse-CDF samples follow the same distribution
    for row, m, s in zip(out["samples"], mu, sigma):
        assert stats.kstest(row, "norm", args=(m, s)).pvalue > 0.01


def test_posterior_truncated_at_prior_edge():
    grid = theta_grid((0.0, 5.0), 500)
    out = summarize_grid_posterior(-0.5 * (grid[None] / 1.0) ** 2, grid, 1000, np.random.default_rng(1))
    # half-normal on [0, 5]: mean sqrt(2/pi)
    assert out["mean"][0] == pytest.approx(np.sqrt(2 / np.pi), abs=0.01)
    assert out["samples"].min() >= 0.0 and out["q05"][0] >= 0.0


def test_grid_posterior_agrees_with_sampling_the_flow():
    """Summaries from the exact grid density match samples drawn from the flow itself (inside the prior)."""
    import torch

    from cryoflow.sbi import models
    from cryoflow.sbi.inference import posterior_batches

    torch.manual_seed(1)
    model = models.PosteriorEstimator((-4.0, 6.0), latent_dim=8, width=4, transforms=2, hidden_features=(16,)).eval()
    images = torch.randn(3, 32, 32)
    post = posterior_batches(model, [images.numpy()], 3, grid_points=2000, n_samples=10)
    with torch.no_grad():
        u = model.npe.flow(model.embedding(images)).sample((1_000_000,))[..., 0]
    theta = (u * model.theta_scale + model.theta_center).numpy()
    for i in range(3):
        inside = theta[:, i][(theta[:, i] >= -4.0) & (theta[:, i] <= 6.0)]
        assert post["mean"][i] == pytest.approx(inside.mean(), abs=0.01)
        assert post["std"][i] == pytest.approx(inside.std(), rel=0.01)
        assert post["q05"][i] == pytest.approx(np.quantile(inside, 0.05), abs=0.02)
        assert post["q95"][i] == pytest.approx(np.quantile(inside, 0.95), abs=0.02)


def test_npz_writer_streams_batches_and_gather_joins_shards(tmp_path):
    from cryoflow.io.npz import NpzWriter
    from cryoflow.sbi.inference import concatenate_npz

    rng = np.random.default_rng(0)
    shards = []
    for i, n in enumerate([5, 3]):
        mean = rng.normal(size=n)
        latent = rng.normal(size=(n, 4)).astype(np.float16)
        path = tmp_path / f"shard{i}.npz"
        with NpzWriter(path) as writer:
            for rows in np.array_split(np.arange(n), 2):
                writer.append(mean=mean[rows], latent=latent[rows])
            writer.close(
                theta_grid_range_A=np.array([-5.0, 5.0]),
                seconds=np.array([1.5 + i]),
                device=np.array(["cpu" if i == 0 else "cuda:0"]),
            )
        shards.append((mean, latent))
        with np.load(path) as back:
            np.testing.assert_array_equal(back["latent"], latent)
            assert back["latent"].dtype == np.float16 and back["mean"].shape == (n,)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shard0.npz", "shard1.npz"]  # no temporaries left
    assert concatenate_npz([tmp_path / "shard0.npz", tmp_path / "shard1.npz"], tmp_path / "all.npz") == 8
    with np.load(tmp_path / "all.npz") as gathered:
        np.testing.assert_array_equal(gathered["mean"], np.concatenate([shards[0][0], shards[1][0]]))
        np.testing.assert_array_equal(gathered["latent"], np.concatenate([shards[0][1], shards[1][1]]))
        assert gathered["shard_particles"].tolist() == [5, 3] and gathered["shard_seconds"].tolist() == [1.5, 2.5]
        assert gathered["theta_grid_range_A"].tolist() == [-5.0, 5.0]
        assert gathered["shard_device"].tolist() == ["cpu", "cuda:0"]


def test_npz_writer_leaves_nothing_when_interrupted(tmp_path):
    from cryoflow.io.npz import NpzWriter

    with pytest.raises(RuntimeError), NpzWriter(tmp_path / "x.npz") as writer:
        writer.append(mean=np.zeros(3))
        raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_edge_mass_flags_posteriors_piled_at_the_prior_edges():
    grid = theta_grid((-10.0, 10.0), 400)  # edge bands: below -9 Å and above 9 Å
    centres, widths = np.array([0.0, -10.0, 9.8, 5.0]), np.array([1.0, 0.5, 0.3, 8.0])
    log_density = -0.5 * ((grid[None] - centres[:, None]) / widths[:, None]) ** 2
    out = summarize_grid_posterior(log_density, grid, 10, np.random.default_rng(0))
    assert out["edge_mass"][0] < 1e-6  # narrow, in the middle
    assert out["edge_mass"][1] > 0.95 and out["edge_mass"][2] > 0.95  # piled at either edge
    assert 0.05 < out["edge_mass"][3] < 0.5  # broad: some mass at the edges, not atypical


def test_2d_grid_summaries_are_the_marginals_and_samples_are_joint():
    """A correlated 2-D Gaussian on the grid: marginal mean, σ, quantiles exact; joint samples keep the correlation."""
    axes, points = posterior_grid([[-10.0, 10.0], [-8.0, 8.0]], 16, 200)
    assert points.shape == (200 * 200, 2)
    mu, sigma, rho = np.array([-2.0, 1.5]), np.array([1.0, 2.0]), 0.6
    z = (points - mu) / sigma
    log_density = -0.5 * (z[:, 0] ** 2 - 2 * rho * z[:, 0] * z[:, 1] + z[:, 1] ** 2) / (1 - rho**2)
    out = summarize_grid_posterior_2d(log_density[None], axes, 20000, np.random.default_rng(0))
    np.testing.assert_allclose(out["mean"][0], mu, atol=0.01)
    np.testing.assert_allclose(out["std"][0], sigma, rtol=0.01)
    np.testing.assert_allclose(out["q05"][0], mu + sigma * stats.norm.ppf(0.05), atol=0.03)
    np.testing.assert_allclose(out["q95"][0], mu + sigma * stats.norm.ppf(0.95), atol=0.03)
    np.testing.assert_allclose(out["map"][0], mu, atol=0.1)
    samples = out["samples"][0]
    assert samples.shape == (20000, 2)
    assert np.corrcoef(samples.T)[0, 1] == pytest.approx(rho, abs=0.02)
    for d in range(2):
        assert stats.kstest(samples[:, d], "norm", args=(mu[d], sigma[d])).pvalue > 0.01
    assert out["edge_mass"][0] < 0.01
    corner = np.where((points[:, 0] > 9.5) & (points[:, 1] < -7.5), 0.0, -50.0)  # all mass in one corner
    assert summarize_grid_posterior_2d(corner[None], axes, 10, np.random.default_rng(0))["edge_mass"][0] > 0.99


def test_star_columns_per_coordinate():
    one = {key: np.zeros(3) for key in STAR_COLUMNS.values()}
    assert list(star_columns(one, 1)) == list(STAR_COLUMNS)
    two = {key: np.zeros((3, 2)) for key in STAR_COLUMNS.values()} | {"edge_mass": np.zeros(3)}
    columns = star_columns(two, 2)
    assert "cryoflowTheta1MeanAngst" in columns and "cryoflowTheta2Q95Angst" in columns
    assert "cryoflowThetaEdgeMass" in columns and "cryoflowThetaMeanAngst" not in columns
    assert len(columns) == 2 * (len(STAR_COLUMNS) - 1) + 1


@pytest.mark.parametrize("sigma", [0.6, 1.0, 2.0])
def test_default_2d_grid_is_fine_enough_for_posteriors_a_few_cells_wide(sigma):
    """32² cells over 18 Å (0.56 Å cells) against 256²: means and σ within 0.001 Å, quantiles within 0.06 Å."""
    mu, scale = np.array([-2.3, 4.1]), np.array([sigma, 1.7 * sigma])
    out = {}
    for cells in (32, 256):
        axes, points = posterior_grid([[-9.0, 9.0], [-9.0, 9.0]], 512, cells)
        log_density = -0.5 * np.sum(((points - mu) / scale) ** 2, axis=1)
        out[cells] = summarize_grid_posterior_2d(log_density[None], axes, 10, np.random.default_rng(0))
    for key, tolerance in (("mean", 1e-3), ("std", 1e-3), ("q05", 0.06), ("q50", 0.06), ("q95", 0.06)):
        np.testing.assert_allclose(out[32][key], out[256][key], atol=tolerance, err_msg=key)
