"""How the coefficients of the fused LSTM loops' float32 tanh (cpu_recurrent._tanh_float32) are
derived; run by its test (tests/worker/engine/test_tanh_fit.py), never at import of the engine.

The form: tanh(x) ~ x * P(x*x) / Q(x*x) on |x| up to SATURATION, x clamped there beyond. It is
odd by construction, needs no call and no branch (a clamp and one division), so Numba/LLVM
vectorise the loops that use it. P and Q start at 1 (p[0] = q[0] = 1): a tiny x, whose square
is 0 in float32, comes back exactly (denormals included), and the ratio tends to 1 at 0.

The fit: the relative error x * P / (tanh(x) * Q) - 1 over a dense grid of (0, SATURATION],
linearised as (x * P - tanh(x) * Q) / (tanh(x) * Q_previous) (the denominator of the previous
iterate, which makes the linearisation exact at convergence), minimised by weighted least squares
in float64, the weights updated by Lawson's rule (each point's weight times its error) so that
the fit moves from least squares towards the minimax (equal-ripple) error; the best iterate by
maximum error is kept. Degrees 5 and 4 in x*x put the fit's own error far below float32's half
ulp (2**-24 relative), so the float32 evaluation's rounding is what remains.
"""
from __future__ import annotations

import numpy as np

NUMERATOR_DEGREE, DENOMINATOR_DEGREE = 5, 4  # in x*x
# float32 tanh rounds to 1 from here: tanh = 1 - 2**-25, half an ulp below 1 (the tie goes to even, 1)
SATURATION = float(np.arctanh(1 - 2.0 ** -25))


def float32_saturation() -> float:
    """The smallest float32 at or above SATURATION: the clamp of the float32 tanh."""
    nearest = np.float32(SATURATION)
    return float(nearest if float(nearest) >= SATURATION else np.nextafter(nearest, np.float32(np.inf)))


def _linear_system(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(a, b) with a @ [p1.., q1..] - b = x * P(x*x) - tanh(x) * Q(x*x), p[0] = q[0] = 1."""
    t, s = np.tanh(x), x * x
    columns = [x * s ** k for k in range(1, NUMERATOR_DEGREE + 1)]
    columns += [-t * s ** k for k in range(1, DENOMINATOR_DEGREE + 1)]
    return np.stack(columns, axis=1), t - x


def evaluate(p: np.ndarray, q: np.ndarray, x: np.ndarray) -> np.ndarray:
    """x * P(x*x) / Q(x*x) in the dtype of x (coefficients cast to it), x clamped to SATURATION."""
    a = np.clip(x, -SATURATION, SATURATION).astype(x.dtype)
    s = a * a
    numerator, denominator = np.polyval(p[::-1].astype(x.dtype), s), np.polyval(q[::-1].astype(x.dtype), s)
    return a * numerator / denominator


def fit(points: int = 20_000, iterations: int = 300) -> tuple[np.ndarray, np.ndarray, float]:
    """(p, q, the maximum relative error over the grid) in float64; p[k], q[k] multiply (x*x)**k."""
    x = np.linspace(0.0, SATURATION, points + 1)[1:]
    a, b = _linear_system(x)
    t = np.tanh(x)
    weights, denominator = np.ones_like(x), np.ones_like(x)
    best = (np.inf, np.ones(1), np.ones(1))
    for _ in range(iterations):
        scale = weights / (t * denominator)
        scaled = a * scale[:, None]
        norms = np.linalg.norm(scaled, axis=0)  # columns span powers of 81: equilibrate them
        solution = np.linalg.lstsq(scaled / norms, b * scale, rcond=None)[0] / norms
        p = np.concatenate([[1.0], solution[:NUMERATOR_DEGREE]])
        q = np.concatenate([[1.0], solution[NUMERATOR_DEGREE:]])
        denominator = np.polyval(q[::-1], x * x)
        error = np.abs(evaluate(p, q, x) / t - 1)
        if error.max() < best[0]:
            best = (error.max(), p, q)
        weights = weights * error / np.sum(weights * error)
    return best[1], best[2], float(best[0])
