"""The explicit-likelihood reference: closed form, exact sums, grids and the posterior it gives."""

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import ROOT
from scipy import integrate, special
from simulation_helpers import make_priors

from cryoflow.analysis import diagnostics
from cryoflow.likelihood import comparison, exact, gridsize, yardstick
from cryoflow.physics import so3
from cryoflow.physics.projection import AtomTemplates
from cryoflow.physics.simulator import Simulator, uniform_rotations


def grid(**overrides) -> exact.GridSettings:
    """GridSettings with the schema's likelihood defaults, ``overrides`` on top."""
    schema = yaml.safe_load((ROOT / "workflow" / "schemas" / "config.schema.yaml").read_text())
    defaults = {k: v["default"] for k, v in schema["definitions"]["likelihood"]["properties"].items()}
    defaults = {k: v for k, v in defaults.items() if k not in ("n_images", "nuisance")}
    defaults["orientations"] = tuple(defaults["orientations"])
    return exact.GridSettings(**{**defaults, **overrides})


def test_log_evidence_matches_numerical_integration_over_scale_offset_and_noise():
    """∫∫∫ N(I | N·P + μ, σ²) dN dμ dσ/σ by quadrature on a 6-pixel image equals the closed form."""
    rng = np.random.default_rng(0)
    projection = rng.normal(size=6)
    image = 1.7 * projection + 0.4 + 0.8 * rng.normal(size=6)
    n = len(image)
    # all three numerically on a fine grid (trapezoid; the integrand is smooth and vanishes at the ends):
    # σ on a log scale (dσ/σ = d log σ), N and μ over ±8 around the least-squares fit
    design = np.stack([projection, np.ones(n)], 1)
    fit, *_ = np.linalg.lstsq(design, image, rcond=None)
    scale = np.linspace(fit[0] - 8, fit[0] + 8, 241)[:, None, None]
    mu = np.linspace(fit[1] - 8, fit[1] + 8, 241)[None, :, None]
    log_sigma = np.linspace(-6.0, 3.0, 541)[None, None, :]
    coo, coc, co = image @ image, image @ projection, image.sum()
    ccc, cc = projection @ projection, projection.sum()
    squares = coo - 2 * scale * coc - 2 * mu * co + scale**2 * ccc + 2 * scale * mu * cc + n * mu**2
    log_density = -0.5 * squares * np.exp(-2 * log_sigma) - n * (log_sigma + 0.5 * math.log(2 * math.pi))
    value = integrate.trapezoid(
        integrate.trapezoid(integrate.trapezoid(np.exp(log_density), log_sigma[0, 0], axis=2), mu[0, :, 0], axis=1),
        scale[:, 0, 0],
    )
    closed = exact.log_evidence(
        image @ projection, image.sum(), image @ image, projection.sum(), projection @ projection, n
    )
    assert closed == pytest.approx(math.log(value), abs=2e-3)
    # and the closed form only depends on the projection up to scale and offset
    shifted = exact.log_evidence(
        image @ (3 * projection + 1),
        image.sum(),
        image @ image,
        (3 * projection + 1).sum(),
        (3 * projection + 1) @ (3 * projection + 1),
        n,
    )
    assert shifted - closed == pytest.approx(-math.log(3), abs=1e-9)


@pytest.fixture(scope="module")
def adk_simulator(adk_ca):
    """Three adenylate-kinase-like templates (a breathing motion of 4AKE's CA), 24-px images at 3 Å."""
    coords = torch.as_tensor(adk_ca.getCoords(), dtype=torch.float32)
    centre = coords.mean(0)
    templates = torch.stack([centre + (coords - centre) * (1 + 0.06 * k) for k in (-1, 0, 1)])
    priors = make_priors(
        theta_range_A=(-3.0, 3.0),
        shift_max_A=0.0,
        defocus_range_A=(8000.0, 16000.0),
        b_factor_range_A2=(0.0, 80.0),
        snr_range=(0.5, 0.5),
        bead_sigma_range_A=(3.0, 3.0),
        mask_radius_A=30.0,
    )
    return Simulator(AtomTemplates(templates, [-3.0, 0.0, 3.0], torch.ones(len(coords)), oversample=2), 24, 3.0, priors)


def direct_log_likelihood(sim, image, rotations, nuisance, index):
    """The exact sum over a discrete pose set by brute force: real-space images, least squares per pose."""
    out = []
    n = image.size
    for t in sim.templates.theta_A:
        terms = []
        for rot in rotations:
            one = {key: value[index : index + 1] for key, value in nuisance.items()}
            one["rotation"], one["shift_A"] = rot[None], torch.zeros(1, 2)
            p = sim.noiseless(t[None], one)[0].double().numpy().reshape(-1)
            design = np.stack([p, np.ones(n)], 1)
            fit, *_ = np.linalg.lstsq(design, image.reshape(-1), rcond=None)
            residual = np.sum((image.reshape(-1) - design @ fit) ** 2)
            det = np.linalg.det(design.T @ design)
            terms.append(
                -0.5 * np.log(det)
                - 0.5 * (n - 2) * np.log(0.5 * residual)
                + (1 - 0.5 * n) * np.log(2 * np.pi)
                + np.log(0.5)
                + special.gammaln(0.5 * (n - 2))
            )
        out.append(special.logsumexp(terms) - np.log(len(rotations)))
    return np.array(out)


def test_sum_over_a_discrete_pose_set_is_exact(adk_simulator):
    """Images simulated at poses from a set of 5: the engine's sum over that set equals the direct one."""
    sim = adk_simulator
    g = torch.Generator().manual_seed(1)
    rotations = uniform_rotations(5, g)
    n = 4
    nuisance = sim.sample_nuisance(n, g)
    nuisance["rotation"] = rotations[torch.tensor([0, 2, 4, 1])]
    theta = torch.tensor([-3.0, 0.0, 3.0, 0.0])
    images = sim.simulate(theta, g, nuisance).double().numpy()
    settings = grid(known=exact.KNOWABLE, refine_levels=0)
    engine = exact.ExplicitLikelihood(sim, settings, rotations=rotations)
    found = engine.log_likelihood(images.astype(np.float32), nuisance)["log_likelihood"]
    for b in range(n):
        expected = direct_log_likelihood(sim, images[b], rotations, nuisance, b)
        assert np.allclose(found[b], expected, atol=2e-2), (b, found[b], expected)


def test_shift_and_defocus_refinement_converges_to_a_dense_grid(adk_ca):
    """Off-grid shifts and defocus at SNR 0.5, poses from a discrete set (orientations exact): a coarse 3 × 3
    shift, 4-defocus grid is off by nats, its local refinement matches a dense 31 × 31, 48-defocus grid for
    every template: each template's own heaviest cells are split (with only the image's heaviest 4 per level,
    the templates that fit less well were off by 0.54 nats)."""
    coords = torch.as_tensor(adk_ca.getCoords(), dtype=torch.float32)
    centre = coords.mean(0)
    templates = torch.stack([centre + (coords - centre) * (1 + 0.06 * k) for k in (-1, 0, 1)])
    priors = make_priors(
        theta_range_A=(-3.0, 3.0),
        shift_max_A=6.0,
        defocus_range_A=(8000.0, 16000.0),
        b_factor_range_A2=(40.0, 40.0),
        snr_range=(0.5, 0.5),
        bead_sigma_range_A=(3.0, 3.0),
        mask_radius_A=30.0,
    )
    sim = Simulator(AtomTemplates(templates, [-3.0, 0.0, 3.0], torch.ones(len(coords)), oversample=2), 24, 3.0, priors)
    g = torch.Generator().manual_seed(3)
    rotations = uniform_rotations(5, g)
    nuisance = sim.sample_nuisance(3, g)
    nuisance["rotation"] = rotations[torch.tensor([0, 2, 4])]
    images = sim.simulate(torch.tensor([-3.0, 0.0, 3.0]), g, nuisance).numpy()

    def log_l(**grids):
        engine = exact.ExplicitLikelihood(sim, grid(refine_levels=0, **grids), rotations=rotations)
        found = engine.log_likelihood(images)
        # the memory estimate's bound on the rows the refinement makes holds
        rows = engine.n_nuisance() * len(engine.shifts_A)
        bound = gridsize.refined_rows(rows, 3, grids["nuisance_refine_top"], grids["nuisance_refine_levels"])
        assert (found["n_rows"] <= bound).all(), (found["n_rows"], bound)
        return found["log_likelihood"], found["n_rows"]

    coarse, rows_coarse = log_l(shift_points=3, defocus_points=4, nuisance_refine_levels=0, nuisance_refine_top=4)
    refined, rows = log_l(shift_points=3, defocus_points=4, nuisance_refine_levels=6, nuisance_refine_top=4)
    dense, _ = log_l(shift_points=31, defocus_points=48, nuisance_refine_levels=0, nuisance_refine_top=4)
    assert (rows > rows_coarse).all()  # the refinement split cells
    assert np.abs(coarse - dense).max() > 1.0  # the coarse grid alone is far off
    assert np.abs(refined - dense).max() < 0.15, np.abs(refined - dense)


def test_defocus_grid_converges_to_known_defocus_within_its_prior(adk_simulator):
    """Marginalizing defocus on a fine grid gives at least the mass near the truth: log p ≥ known − log(range)."""
    sim = adk_simulator
    g = torch.Generator().manual_seed(5)
    rotations = uniform_rotations(3, g)
    nuisance = sim.sample_nuisance(2, g)
    nuisance["rotation"] = rotations[:2]
    images = sim.simulate(torch.tensor([0.0, 3.0]), g, nuisance).numpy()
    known = exact.ExplicitLikelihood(sim, grid(known=exact.KNOWABLE, refine_levels=0), rotations=rotations)
    coarse, fine = (
        exact.ExplicitLikelihood(
            sim,
            grid(known=("b_factor", "bead_sigma"), defocus_points=k, refine_levels=0),
            rotations=rotations,
        ).log_likelihood(images, nuisance)["log_likelihood"]
        for k in (32, 64)
    )
    known_ll = known.log_likelihood(images, nuisance)["log_likelihood"]
    assert np.abs(fine - coarse).max() < 0.1  # the defocus sum has converged
    # marginal over a uniform prior of width 8000 Å ≤ the peak value: the known-defocus likelihood bounds it
    assert np.all(fine <= known_ll + 1e-3)
    assert np.all(fine.argmax(1) == known_ll.argmax(1))


def test_so3_cells_are_equal_volume_and_refinement_keeps_the_measure():
    centres, width = so3.so3_cells(8, 4, 8)
    rot = so3.euler_matrices(centres)
    assert torch.allclose(rot @ rot.transpose(1, 2), torch.eye(3, dtype=rot.dtype).expand_as(rot), atol=1e-12)
    assert torch.allclose(torch.linalg.det(rot), torch.ones(len(rot), dtype=rot.dtype))
    # Haar: cos β uniform, so the rotated z axis' z component R[2, 2] = cos β has mean 0 and E[cos²] = 1/3
    # (the midpoint rule on 4 cells of cos β gives 1/3 − w²/12 = 0.3125 exactly, on 32 cells 1/3 − 1/3072)
    assert rot[:, 2, 2].mean().abs() < 1e-12
    assert (rot[:, 2, 2] ** 2).mean() == pytest.approx(0.3125, abs=1e-12)
    fine = so3.euler_matrices(so3.so3_cells(4, 32, 4)[0])
    assert (fine[:, 2, 2] ** 2).mean() == pytest.approx(1 / 3 - 1 / 3072, abs=1e-12)
    assert fine[:, 0, 0].mean().abs() < 1e-12 and (fine**2).mean(0).sub(1 / 3).abs().max() < 1e-3
    kids = so3.children(centres[:3], width.expand(3, 3))
    assert kids.shape == (24, 3)
    # children tile their parent: their mean is the parent's centre
    assert torch.allclose(kids.reshape(3, 8, 3).mean(1), centres[:3])


def test_refined_posterior_concentrates_on_the_truth(adk_simulator):
    """Uniform SO(3) poses, defocus and B marginalized: the exact posterior picks the simulated template."""
    sim = adk_simulator
    g = torch.Generator().manual_seed(11)
    theta = torch.tensor([-3.0, 0.0, 3.0, -3.0, 3.0, 0.0])
    nuisance = sim.sample_nuisance(len(theta), g)
    images = sim.simulate(theta, g, nuisance).numpy()
    settings = grid(orientations=(8, 4, 8), refine_top=4, refine_levels=4, defocus_points=4, b_factor_points=2)
    out = exact.ExplicitLikelihood(sim, settings).log_likelihood(images)
    assert np.all(out["log_likelihood"].argmax(1) == [0, 1, 2, 0, 2, 1])
    # the coarse grid alone is off by nats; one more level of refinement changes the best template's value little
    best = out["log_likelihood"].max(1)
    assert np.abs(out["log_likelihood_coarse"].max(1) - best).max() > 1.0
    settings.refine_levels = 5
    finer = exact.ExplicitLikelihood(sim, settings).log_likelihood(images)["log_likelihood"]
    assert np.median(np.abs(finer.max(1) - best)) < 0.5
    assert np.all(out["n_cells"] == 8 * 4 * 8 + 4 * 4 * 7)
    theta_grid = np.linspace(-2.9, 2.9, 30)
    log_post = comparison.posterior_on_grid(out["log_likelihood"], [-3.0, 0.0, 3.0], theta_grid)
    assert np.all(np.abs(theta_grid[log_post.argmax(1)] - theta.numpy()) < 0.3)
    assert np.allclose(comparison.kl_divergence(log_post, log_post), 0.0)


def test_each_template_refines_its_own_views(adk_simulator):
    """Orientation refinement is per template: a template's refined log-likelihood is the same whichever other
    templates stand beside it (shift and defocus cells fixed, as they are shared)."""
    sim = adk_simulator
    g = torch.Generator().manual_seed(3)
    theta = torch.tensor([-3.0, 3.0])
    images = sim.simulate(theta, g, sim.sample_nuisance(2, g)).numpy()
    settings = grid(orientations=(8, 4, 8), refine_top=3, refine_levels=3, defocus_points=2, b_factor_points=1)
    settings.nuisance_refine_levels = 0
    both = exact.ExplicitLikelihood(sim, settings).log_likelihood(images)["log_likelihood"]
    coords = sim.templates.coords
    for keep in ([0, 1], [1, 2]):  # two templates at the same θ nodes' neighbours: the pair's own values
        pair = AtomTemplates(coords[keep], [-3.0, 3.0], torch.ones(coords.shape[1]), oversample=2)
        alone = Simulator(pair, 24, 3.0, sim.priors)
        out = exact.ExplicitLikelihood(alone, settings).log_likelihood(images)["log_likelihood"]
        np.testing.assert_allclose(out, both[:, keep], atol=1e-4)


def test_grids_too_large_for_memory_are_refused_before_allocation(adk_simulator):
    settings = grid(orientations=(64, 32, 64), max_memory_gb=0.5)
    with pytest.raises(exact.LikelihoodError, match="max_memory_gb"):
        exact.ExplicitLikelihood(adk_simulator, settings)
    with pytest.raises(exact.LikelihoodError, match="known"):
        exact.ExplicitLikelihood(adk_simulator, grid(known=("defocus",)))


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux's resettable high-water mark")
def test_the_memory_estimate_bounds_the_measured_peak_at_three_grid_sizes():
    """The DAG refuses a likelihood block by this estimate and the rule asks the cluster for it: it must not
    fall below the engine's measured peak (set-up and one image), nor be needlessly far above it."""
    for args in ((24, 3, 6, 4, 2), (32, 5, 12, 8, 2), (48, 8, 16, 16, 2)):
        run = subprocess.run(
            [sys.executable, str(ROOT / "tests" / "likelihood_memory.py"), *map(str, args)],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert run.returncode == 0, run.stderr[-2000:]
        found = json.loads(run.stdout.strip().splitlines()[-1])
        assert found["peak"] <= found["estimated"] <= 3 * found["peak"], found


class DeviceTensor(torch.Tensor):
    """A tensor that, like a CUDA tensor, has no numpy view."""

    def __array__(self, *args, **kwargs):
        raise TypeError("can't convert cuda:0 device type tensor to numpy. Use Tensor.cpu() first.")


def test_the_likelihood_takes_the_simulators_images_on_their_device(adk_simulator):
    """validation.likelihood hands the fixed-SNR images as the simulator made them, CUDA tensors on a GPU: the
    engine moves them itself rather than through numpy (which crashed on every GPU machine)."""
    g = torch.Generator().manual_seed(2)
    images = adk_simulator.simulate(torch.tensor([0.0]), g)
    with pytest.raises(TypeError, match="cuda"):
        np.asarray(images.as_subclass(DeviceTensor))
    rotations = uniform_rotations(4, g)
    engine = exact.ExplicitLikelihood(adk_simulator, grid(refine_levels=0, nuisance_refine_levels=0), rotations)
    on_device = engine.log_likelihood(images.as_subclass(DeviceTensor))["log_likelihood"]
    np.testing.assert_allclose(on_device, engine.log_likelihood(images.numpy())["log_likelihood"], rtol=1e-6)


@pytest.fixture(scope="module")
def reference(adk_simulator):
    """A yardstick of adk_simulator: 4 images at each of two SNRs, CTF marginalized, small grids."""
    settings = {"marginalized": grid(orientations=(6, 3, 6), refine_top=3, refine_levels=2, defocus_points=3)}
    provenance = {"ensemble_sha256": "e" * 64, "settings_sha256": "s" * 64}
    return yardstick.make_reference(adk_simulator, [0.1, 1.0], 4, 5, settings, provenance)


def test_the_yardstick_scores_the_exact_posterior_at_zero_and_a_flat_one_at_its_information(reference):
    ref = reference
    assert ref["images"].shape == (8, 24, 24) and ref["log_likelihood_marginalized"].shape == (8, 3)
    assert np.all(ref["snr"][:4] == np.float32(0.1)) and np.all(ref["snr"][4:] == 1.0)
    grid_A = np.linspace(-2.95, 2.95, 60)
    exact_density = comparison.posterior_on_grid(ref["log_likelihood_marginalized"], ref["theta_nodes_A"], grid_A)
    same = yardstick.score_densities(ref, exact_density, grid_A)
    for e in same:
        assert e["excess_nll"] == pytest.approx(0.0, abs=1e-9) and e["median_kl"] == pytest.approx(0.0, abs=1e-9)
        assert e["median_std_ratio"] == pytest.approx(1.0) and e["p68_ratio"] == pytest.approx(1.0)
    # the prior as the estimator: its excess is the exact posterior's log density at the truth over the prior's
    flat = yardstick.score_densities(ref, np.zeros_like(exact_density), grid_A)
    for e, snr in zip(flat, (0.1, 1.0), strict=True):
        rows = ref["snr"] == np.float32(snr)
        at_truth = diagnostics.log_density_at(exact_density[rows], grid_A, ref["theta_true"][rows])
        assert e["excess_nll"] == pytest.approx(np.mean(at_truth + np.log(6.0)), rel=1e-6)  # 60 cells of 0.1 Å
    assert flat[1]["excess_nll"] > 1.0  # at SNR 1 the images hold more than a nat over the prior
    assert flat[1]["median_std_ratio"] > 1 and flat[1]["median_kl"] > 0


def test_the_68th_percentile_error_of_gaussian_posteriors_is_their_sigma():
    grid_A = np.linspace(-20, 20, 4001)
    truth = np.array([0.0, 1.0, -2.0])
    log_density = -0.5 * ((grid_A[None, :] - truth[:, None]) / 1.5) ** 2
    assert yardstick.p68_error(log_density, grid_A, truth) == pytest.approx(0.9945 * 1.5, rel=0.01)


def test_a_reference_for_other_templates_or_priors_is_refused_naming_the_field(reference, tmp_path):
    from cryoflow.errors import InputError

    priors = {"theta_range_A": [-3.0, 3.0], "snr_range": [0.1, 2.0], "shift_max_A": 0.0}
    ref = {**reference, "settings_sha256": np.array(yardstick.settings_sha256(priors, 24, 3.0))}
    card = {
        "checksums_sha256": {"ensemble": "e" * 64},
        "priors": priors,
        "config": {"image": {"box_px": 24, "pixel_size_A": 3.0}},
    }
    yardstick.check("ref.npz", ref, card, "card.json")
    # the SNR prior is free: the reference's images are at fixed SNRs
    yardstick.check("ref.npz", ref, {**card, "priors": {**priors, "snr_range": [0.01, 2.0]}}, "card.json")
    with pytest.raises(InputError, match="ref.npz: field 'ensemble_sha256'.*card.json names ensemble"):
        yardstick.check("ref.npz", ref, {**card, "checksums_sha256": {"ensemble": "f" * 64}}, "card.json")
    with pytest.raises(InputError, match="ref.npz: field 'settings_sha256' does not match"):
        yardstick.check("ref.npz", ref, {**card, "priors": {**priors, "shift_max_A": 2.0}}, "card.json")
    path = tmp_path / "ref.npz"
    np.savez(path, **{**ref, "format": np.array("other")})
    with pytest.raises(InputError, match="field 'format'"):
        yardstick.load(path)


def test_halfway_conformations_fit_an_image_made_there_better_than_the_nodes_interpolation(adk_simulator, reference):
    """The θ check: images at the midpoints between templates; the likelihood there, against its linear
    interpolation over the nodes, is higher (the conformation fits), so between-template structure is real."""
    sim = adk_simulator
    halfway = yardstick.midpoint_simulator(sim)
    assert torch.allclose(halfway.templates.theta_A, torch.tensor([-1.5, 1.5]))
    expected = 0.5 * (sim.templates.coords[0] + sim.templates.coords[1])
    assert torch.allclose(halfway.templates.coords[0], expected, atol=1e-4)
    g = torch.Generator().manual_seed(3)
    theta = torch.tensor([-1.5, 1.5, -1.5])
    nuisance = sim.sample_nuisance(3, g)
    nuisance["snr"] = torch.full((3,), 1.0)
    ref = {
        **reference,
        "snr": np.full(3, 1.0, dtype=np.float32),
        "images": sim.simulate(theta, g, nuisance).numpy(),
        **{f"nuisance_{k}": v.numpy() for k, v in nuisance.items()},
    }
    settings = grid(orientations=(6, 3, 6), refine_top=3, refine_levels=2, defocus_points=3)
    ref["log_likelihood_marginalized"] = exact.ExplicitLikelihood(sim, settings).log_likelihood(ref["images"])[
        "log_likelihood"
    ]
    check = yardstick.theta_convergence(sim, ref, "marginalized", settings, 1.0, 3)
    assert check["n"] == 3 and check["max_abs_difference"] > 1.0 and check["median_kl_fine_to_nodes"] > 0


def test_the_model_reports_verdict_names_the_snr_it_leaves_most_at():
    entries = [
        {"nuisance": "marginalized", "snr": 0.1, "excess_nll": 1.2, "excess_nll_se": 0.1, "within_training_snr": True},
        {
            "nuisance": "marginalized",
            "snr": 0.01,
            "excess_nll": 3.0,
            "excess_nll_se": 0.2,
            "within_training_snr": False,
        },
    ]
    verdict = diagnostics.likelihood_verdict(entries)
    assert "1.20 ± 0.10 nats per image at SNR 0.1" in verdict and "production preset" in verdict
    close = [{**entries[0], "excess_nll": 0.1}]
    assert "more training would gain little" in diagnostics.likelihood_verdict(close)
    assert diagnostics.likelihood_verdict([]) is None
