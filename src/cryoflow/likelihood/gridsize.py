"""Sizes of the explicit likelihood's grids, and the config checks built on them (standard library only).

The DAG side (``workflow/rules/config.smk``) refuses a ``likelihood`` block
that cannot run before any job starts; ``cryoflow.likelihood.exact`` checks the
same memory estimate again when it builds its grids.
"""

from __future__ import annotations

import math

# nuisance modes of a likelihood block and the nuisances each takes per image instead of summing them
MODES = {"marginalized": (), "ctf_known": ("ctf",)}


def refined_rows(n_rows: int, n_templates: int, nuisance_refine_top: int, nuisance_refine_levels: int) -> int:
    """At most the shift × nuisance rows after the local shift and defocus refinement: each level splits up to
    ``nuisance_refine_top`` rows per template into eight (shift quarters × defocus halves)."""
    return n_rows + 7 * n_templates * nuisance_refine_top * nuisance_refine_levels


# projections made at once in the engine's set-up (``ExplicitLikelihood.project_pairs``)
PROJECTION_CHUNK = 2048


def estimated_bytes(
    box_px: int, n_templates: int, n_orientations: int, n_rows: int, cfg: dict, oversample: int = 2
) -> int:
    """An upper bound on the engine's peak memory (bytes), tested against measured peaks.

    The set-up holds the real-stacked spectra (2K × T·O float32, K = box·(box/2 + 1) Fourier coefficients)
    and those of one orientation refinement level (2K × T·8·``refine_top``) twice while they are joined,
    plus one chunk's projection temporaries (``PROJECTION_CHUNK`` projections: the beads spread on a grid
    ``oversample`` times finer and its spectra, or a map's slices); each image adds its products (rows × 2K,
    rows × 4 096 columns) for ``n_rows`` shift × nuisance points and the rows their refinement adds
    (``refined_rows``). Ten per cent on top for the allocator. ``cfg``: the likelihood block's grids."""
    k = box_px * (box_px // 2 + 1)
    m = n_templates * n_orientations
    level = 8 * n_templates * cfg["refine_top"] if cfg["refine_levels"] else 0  # one refinement level's projections
    fine = box_px * oversample
    per_projection = max(fine * fine * 4 + 2 * fine * (fine // 2 + 1) * 8 + 3 * k * 8 + 2 * k * 4, 160 * k)
    setup = 2 * (2 * k * (m + level)) * 4 + min(PROJECTION_CHUNK, m + level) * per_projection
    rows = refined_rows(n_rows, n_templates, cfg["nuisance_refine_top"], cfg["nuisance_refine_levels"])
    image = 4 * (2 * rows * k + 3 * rows * min(max(m, level), 4096))
    return int(1.1 * (setup + image))


def varies(pair) -> bool:
    return pair[1] > pair[0]


def n_nuisance(cfg: dict, known: tuple, defocus_range, b_range, bead_range) -> int:
    """Points of the nuisance grid (defocus × B-factor × bead width) with the ``known`` ones taken per image."""
    count = 1 if "ctf" in known or not varies(defocus_range) else cfg["defocus_points"]
    if "b_factor" not in known and varies(b_range):
        count *= cfg["b_factor_points"]
    if "bead_sigma" not in known and varies(bead_range):
        count *= cfg["bead_sigma_points"]
    return count


def bead_range(bead_sigma_A) -> list[float]:
    return list(bead_sigma_A) if isinstance(bead_sigma_A, list) else [bead_sigma_A, bead_sigma_A]


def likelihood_problems(cfg: dict, where: str, config: dict) -> list[str]:
    """What stops a ``likelihood`` block (at ``where``) from running with this config: 1-D θ only, CTF
    priors the marginalization does not cover, grids beyond ``max_memory_gb``."""
    sim, image = config["simulator"], config["image"]
    problems = []
    if config["templates"]["theta_dims"] != 1:
        problems.append(f"{where}: the explicit likelihood is implemented for a 1-D θ (templates.theta_dims: 1)")
    if "marginalized" in cfg["nuisance"]:
        if sim["astigmatism_max_A"] > 0 or varies(sim["phase_shift_range_deg"]):
            problems.append(
                f"{where}.nuisance: marginalized sums defocus only; simulator.astigmatism_max_A or "
                "phase_shift_range_deg vary: use ctf_known"
            )
    n_templates = config["templates"]["n_templates"]
    n_orientations = math.prod(cfg["orientations"])
    shifts = cfg["shift_points"] ** 2 if sim["shift_max_A"] > 0 else 1
    for mode in cfg["nuisance"]:
        known = MODES[mode]
        rows = shifts * n_nuisance(
            cfg, known, sim["defocus_range_A"], sim["b_factor_range_A2"], bead_range(sim["bead_sigma_A"])
        )
        oversample = sim["oversample"] if sim["projection"] == "atoms" else 1
        need = estimated_bytes(image["box_px"], n_templates, n_orientations, rows, cfg, oversample) / 2**30
        if need > cfg["max_memory_gb"]:
            problems.append(
                f"{where}.max_memory_gb: the {mode} grids need about {need:.1f} GiB (box {image['box_px']}, "
                f"{n_templates} templates, {n_orientations} orientations, {rows} nuisance × shift points); "
                "use fewer orientations or points, or raise the limit"
            )
            break
    return problems
