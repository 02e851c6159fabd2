"""Inverted dropout: mask statistics, scaling, identity at prediction, gradient through the mask."""
from __future__ import annotations

import numpy as np

from worker.engine.layers import BuildContext, layer_class


def _dropout(rate: float, dtype=np.float64):
    layer = layer_class("dropout")({"type": "dropout", "rate": rate}, 1)
    layer.build((1000,), BuildContext(np, dtype, np.random.default_rng(0), np.random.default_rng(0)))
    return layer


def test_mask_drops_the_rate_and_scales_the_rest():
    layer = _dropout(0.25, np.float32)
    x = np.ones((20, 1000), np.float32)
    y = layer.forward(x, True)
    assert y.dtype == np.float32
    kept = y != 0
    assert abs(1 - kept.mean() - 0.25) < 0.01
    np.testing.assert_allclose(y[kept], 1 / 0.75, rtol=1e-6)
    dx = layer.backward(np.full_like(x, 2.0))
    np.testing.assert_array_equal(dx, 2.0 * layer.mask)


def test_identity_at_prediction_and_rate_zero():
    x = np.random.default_rng(1).standard_normal((4, 1000))
    assert _dropout(0.5).forward(x, False) is x
    zero = _dropout(0.0)
    assert zero.forward(x, True) is x
    assert zero.backward(x) is x
