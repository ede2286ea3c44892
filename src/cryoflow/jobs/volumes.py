"""The volumes rule: rasterize every template to an MRC map on a grid shared by all templates."""

from __future__ import annotations

import numpy as np

from cryoflow.job import Job
from cryoflow.physics import rasterize, theta


def run(job: Job) -> None:
    log = job.start_log()
    cfg = job.params.volumes
    data = np.load(job.input.ensemble)
    coords, theta_A, weights = data["coords_A"], data["theta_A"], data["weights"]
    sigma_A = rasterize.map_bead_sigma_A(job.params.bead_sigma_A)  # a range: its low end
    reference = coords[theta.reference_index(theta_A)]
    center = weights @ reference / weights.sum()
    origin = rasterize.grid_origin_A(center, cfg["voxel_size_A"], cfg["box_vox"])
    for path, xyz, t in zip(job.output.maps, coords, theta_A):
        density = rasterize.rasterize_gaussians(xyz, weights, sigma_A, cfg["voxel_size_A"], cfg["box_vox"], center)
        rasterize.write_mrc(path, density, cfg["voxel_size_A"], origin)
        log.info(
            "%s: θ = %s Å, integral %.1f e (model %.1f e)",
            path,
            np.round(t, 2),
            density.sum() * cfg["voxel_size_A"] ** 3,
            weights.sum(),
        )
