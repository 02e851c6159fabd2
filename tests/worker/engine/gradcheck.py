"""Central finite differences in float64, the reference for every backward pass."""
from __future__ import annotations

from collections.abc import Callable

import numpy as np


def numeric_grad(loss_fn: Callable[[], float], array: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """d loss_fn() / d array, element by element, perturbing `array` in place."""
    grad = np.zeros_like(array, dtype=np.float64)
    flat, gflat = array.reshape(-1), grad.reshape(-1)
    for k in range(flat.size):
        orig = flat[k]
        flat[k] = orig + eps
        plus = loss_fn()
        flat[k] = orig - eps
        minus = loss_fn()
        flat[k] = orig
        gflat[k] = (plus - minus) / (2 * eps)
    return grad


def directional_grad(loss_fn: Callable[[], float], array: np.ndarray, direction: np.ndarray,
                     eps: float = 1e-6) -> float:
    """d loss_fn(array + t*direction) / dt at t=0: checks a big tensor along one random direction."""
    orig = array.copy()
    array += eps * direction
    plus = loss_fn()
    array[...] = orig - eps * direction
    minus = loss_fn()
    array[...] = orig
    return (plus - minus) / (2 * eps)


def assert_close(analytic: np.ndarray, numeric: np.ndarray, rtol: float = 1e-5, atol: float = 1e-7,
                 what: str = "") -> None:
    """Relative error |a-n| / max(|a|+|n|, tiny) below rtol, elementwise past atol."""
    analytic = np.asarray(analytic, dtype=np.float64)
    numeric = np.asarray(numeric, dtype=np.float64)
    assert analytic.shape == numeric.shape, f"{what}: shape {analytic.shape} != {numeric.shape}"
    diff = np.abs(analytic - numeric)
    scale = np.abs(analytic) + np.abs(numeric)
    bad = diff > np.maximum(rtol * scale, atol)
    assert not bad.any(), (
        f"{what}: {int(bad.sum())} of {bad.size} entries differ; worst abs diff {diff.max():.3e}, "
        f"analytic {analytic.reshape(-1)[np.argmax(diff)]:.6e} vs numeric {numeric.reshape(-1)[np.argmax(diff)]:.6e}"
    )
