"""The box a particle takes when resampled to the training pixel size, and the largest allowed (standard library
only: the DAG's checks in ``cryoflow.workflow.gridcheck`` use it before any job runs, the particle jobs after)."""

from __future__ import annotations

import math

MAX_RESAMPLED_PX = 4096  # a particle resampled beyond this box (64 MiB per float32 image) is a pixel-size mistake


def resampled_box_px(box_in: int, pixel_in_A: float, pixel_out_A: float) -> int:
    """The even box (px) a ``box_in`` particle of ``pixel_in_A`` pixels takes at the training pixel size,
    before the centre crop to the training box (``physics.preprocess.resampling_plan``'s N')."""
    return max(2, 2 * math.ceil(box_in * pixel_in_A / pixel_out_A / 2 - 1e-9))
