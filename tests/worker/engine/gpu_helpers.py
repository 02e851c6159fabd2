"""Shared by the GPU kernel tests: inputs with NaN and inf, and the tolerance per dtype."""
from __future__ import annotations

import numpy as np

DTYPES = (np.float64, np.float32)
SPECIAL = np.array([np.nan, np.inf, -np.inf, 0.0, 50.0, -50.0])


def close(gpu, ref, dtype) -> None:
    rtol, atol = (1e-10, 1e-12) if np.dtype(dtype) == np.float64 else (2e-5, 1e-6)
    got = gpu.get() if hasattr(gpu, "get") else np.asarray(gpu)
    np.testing.assert_allclose(got, ref, rtol=rtol, atol=atol, equal_nan=True)


def sample(shape, dtype, seed=0, special=True) -> np.ndarray:
    x = np.random.default_rng(seed).normal(scale=2.0, size=shape)
    if special:
        x.reshape(-1)[: SPECIAL.size] = SPECIAL
    return x.astype(dtype)
