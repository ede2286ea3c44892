"""Priors for tests that build a simulator by hand: every field explicit (the package's ``Priors`` has no
defaults; the workflow's come from the schema)."""

from cryoflow.physics.simulator import Priors

# a narrow, centred, aberration-free prior on which the tests' expectations were set
TEST_PRIORS = {
    "shift_max_A": 0.0,
    "pose_max_angle_deg": None,
    "defocus_range_A": (5000.0, 25000.0),
    "astigmatism_max_A": 0.0,
    "phase_shift_range_deg": (0.0, 0.0),
    "b_factor_range_A2": (0.0, 100.0),
    "snr_range": (0.05, 1.0),
    "bead_sigma_range_A": (2.0, 2.0),
    "mask_radius_A": None,
    "optics": [{"voltage_kV": 300.0, "cs_mm": 2.7, "amplitude_contrast": 0.1, "weight": 1.0}],
}


def make_priors(theta_range_A, **overrides) -> Priors:
    """``Priors`` on ``theta_range_A`` with ``TEST_PRIORS`` where ``overrides`` leaves a field out."""
    return Priors(theta_range_A=theta_range_A, **{**TEST_PRIORS, **overrides})
