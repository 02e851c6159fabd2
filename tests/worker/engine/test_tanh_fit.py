"""tanh_fit derives the float32 tanh of cpu_recurrent: re-running the fit gives its literals."""
from __future__ import annotations

import numpy as np

from worker.engine import cpu_recurrent, tanh_fit


def test_the_fit_gives_cpu_recurrents_coefficients_and_clamp():
    p, q, error = tanh_fit.fit()
    assert error < 0.1 * 2.0 ** -24  # far below float32's half ulp: the evaluation's rounding dominates
    np.testing.assert_array_max_ulp(p.astype(np.float32), np.array(cpu_recurrent.TANH_P, np.float32), maxulp=1)
    np.testing.assert_array_max_ulp(q.astype(np.float32), np.array(cpu_recurrent.TANH_Q, np.float32), maxulp=1)
    assert np.float32(cpu_recurrent.TANH_CLAMP) == np.float32(tanh_fit.float32_saturation())


def test_the_clamp_is_the_first_float32_whose_tanh_rounds_to_one():
    clamp = np.float32(tanh_fit.float32_saturation())
    below = np.nextafter(clamp, np.float32(0))
    assert np.float32(np.tanh(np.float64(clamp))) == 1
    assert np.float32(np.tanh(np.float64(below))) < 1


def test_the_fitted_function_is_within_a_few_ulp_in_float32():
    """NumPy's float32 evaluation (no fused multiply-adds): the coefficients survive the rounding."""
    p, q, _ = tanh_fit.fit()
    x = np.linspace(0, 12, 1_000_001, dtype=np.float32)
    exact = np.tanh(x.astype(np.float64))
    ulps = np.abs(tanh_fit.evaluate(p, q, x) - exact) / np.spacing(exact.astype(np.float32))
    assert ulps.max() < 8
