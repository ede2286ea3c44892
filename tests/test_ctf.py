import math

import numpy as np
import pytest
import torch

from cryoflow.physics.ctf import CTF, amplitude_contrast_phase, ctf, electron_wavelength_A, first_zero_frequency


@pytest.mark.parametrize("kv,expected", [(300, 0.019687), (200, 0.025079), (100, 0.037014)])
def test_relativistic_wavelength(kv, expected):
    assert electron_wavelength_A(kv) == pytest.approx(expected, abs=2e-6)


def radial_ctf(s, **kw):
    s = torch.as_tensor(s, dtype=torch.float64)
    params = dict(astigmatism_angle_deg=0.0, voltage_kV=300.0, cs_mm=2.7, amplitude_contrast=0.1)
    params.update(kw)
    return ctf(torch.zeros_like(s), s, CTF(**params)).numpy()


def first_sign_change(s, values):
    i = np.flatnonzero(np.sign(values[1:]) != np.sign(values[:-1]))[0]
    return s[i] - values[i] * (s[i + 1] - s[i]) / (values[i + 1] - values[i])


def test_first_zero_without_aberration_at_one_over_sqrt_lambda_defocus():
    defocus = 15000.0
    s = np.linspace(1e-4, 0.2, 200001)
    values = radial_ctf(s, defocus_u_A=defocus, defocus_v_A=defocus, cs_mm=0.0, amplitude_contrast=0.0)
    expected = 1.0 / math.sqrt(electron_wavelength_A(300.0) * defocus)
    assert first_sign_change(s, values) == pytest.approx(expected, rel=1e-4)


@pytest.mark.parametrize("defocus", [5000.0, 12000.0, 30000.0])
def test_first_zero_with_cs_and_amplitude_contrast_matches_formula(defocus):
    s = np.linspace(1e-4, 0.3, 300001)
    values = radial_ctf(s, defocus_u_A=defocus, defocus_v_A=defocus)
    expected = first_zero_frequency(defocus, 300.0, 2.7, 0.1)
    assert first_sign_change(s, values) == pytest.approx(expected, rel=1e-4)
    # amplitude contrast moves the zero to lower frequency than the pure phase CTF
    assert expected < 1.0 / math.sqrt(electron_wavelength_A(300.0) * defocus)


def test_low_frequency_sign_is_positive_and_equals_amplitude_contrast():
    values = radial_ctf([0.0], defocus_u_A=10000.0, defocus_v_A=10000.0, amplitude_contrast=0.07)
    assert values[0] == pytest.approx(0.07, abs=1e-9)


def test_b_factor_envelope():
    s = np.linspace(0.01, 0.3, 50)
    kw = dict(defocus_u_A=10000.0, defocus_v_A=10000.0)
    ratio = radial_ctf(s, b_factor_A2=80.0, **kw) / radial_ctf(s, **kw)
    np.testing.assert_allclose(ratio, np.exp(-80.0 * s**2 / 4), rtol=1e-9)


def test_astigmatism_defocus_along_axes():
    """With angle 0, the CTF along x uses defocus U and along y defocus V."""
    s = torch.linspace(0.005, 0.15, 100, dtype=torch.float64)
    zero = torch.zeros_like(s)
    kw = dict(astigmatism_angle_deg=0.0, voltage_kV=300.0, cs_mm=2.7, amplitude_contrast=0.1)
    astig = dict(defocus_u_A=12000.0, defocus_v_A=8000.0)
    along_x = ctf(zero, s, CTF(**astig, **kw))
    along_y = ctf(s, zero, CTF(**astig, **kw))
    np.testing.assert_allclose(along_x, ctf(zero, s, CTF(defocus_u_A=12000.0, defocus_v_A=12000.0, **kw)), atol=1e-12)
    np.testing.assert_allclose(along_y, ctf(zero, s, CTF(defocus_u_A=8000.0, defocus_v_A=8000.0, **kw)), atol=1e-12)


def test_phase_plate_shift_turns_sine_into_cosine():
    """A 90° phase shift with no amplitude contrast: CTF = sin(πλΔf s² − … + π/2) = cos(…), 1 at s = 0."""
    s = np.linspace(0.0, 0.2, 200)
    shifted = radial_ctf(s, defocus_u_A=10000.0, defocus_v_A=10000.0, amplitude_contrast=0.0, phase_shift_deg=90.0)
    plain = radial_ctf(s, defocus_u_A=10000.0, defocus_v_A=10000.0, amplitude_contrast=0.0)
    assert shifted[0] == pytest.approx(1.0)
    np.testing.assert_allclose(shifted**2 + plain**2, 1.0, atol=1e-9)


def test_per_image_optics_broadcast():
    """Voltage, Cs and amplitude contrast per image (B, 1, 1) match scalar evaluations."""
    s_y, s_x = torch.meshgrid(torch.linspace(0, 0.2, 9), torch.linspace(0, 0.2, 9), indexing="ij")
    voltage = torch.tensor([300.0, 200.0])[:, None, None]
    cs = torch.tensor([2.7, 1.4])[:, None, None]
    amplitude = torch.tensor([0.1, 0.07])[:, None, None]
    both = ctf(s_y, s_x, CTF(9000.0, 9000.0, 0.0, voltage, cs, amplitude))
    for i, (v, c, a) in enumerate([(300.0, 2.7, 0.1), (200.0, 1.4, 0.07)]):
        torch.testing.assert_close(both[i], ctf(s_y, s_x, CTF(9000.0, 9000.0, 0.0, v, c, a)))


@pytest.mark.parametrize(
    "field,value",
    [("defocus_u_A", float("nan")), ("voltage_kV", 0.0), ("amplitude_contrast", 1.0), ("b_factor_A2", float("inf"))],
)
def test_a_ctf_with_an_impossible_parameter_is_refused_naming_it(field, value):
    params = dict(defocus_u_A=9000.0, defocus_v_A=9000.0, astigmatism_angle_deg=0.0, voltage_kV=300.0, cs_mm=2.7)
    params.update(amplitude_contrast=0.1)
    params[field] = value
    with pytest.raises(ValueError, match=field):
        CTF(**params)


def test_the_amplitude_contrast_phase_is_one_formula_for_numbers_and_tensors():
    amplitude = torch.tensor([0.0, 0.07, 0.1], dtype=torch.float64)
    phases = amplitude_contrast_phase(amplitude)
    for a, phase in zip(amplitude.tolist(), phases.tolist()):
        assert amplitude_contrast_phase(a) == pytest.approx(phase, abs=1e-15)
        assert math.sin(phase) == pytest.approx(a, abs=1e-12)  # the CTF at s = 0 is the amplitude contrast
