"""flatten: C order like torch.nn.Flatten, and an exact inverse on the way back."""
from __future__ import annotations

import numpy as np
import torch

from tests.worker.engine.layer_helpers import build_layer


def test_flatten_is_c_order_like_torch_and_backward_restores_the_shape():
    layer = build_layer({"type": "flatten"}, (3, 4, 5))
    assert layer.out_shape == (60,)
    x = np.random.default_rng(0).standard_normal((2, 3, 4, 5))
    y = layer.forward(x, True)
    np.testing.assert_array_equal(y, torch.nn.Flatten()(torch.from_numpy(x)).numpy())
    upstream = np.random.default_rng(1).standard_normal(y.shape)
    dx = layer.backward(upstream, True)
    assert dx.shape == x.shape
    np.testing.assert_array_equal(dx.reshape(2, -1), upstream)


def test_flatten_of_a_sequence_and_no_params():
    layer = build_layer({"type": "flatten"}, (7, 3))
    assert layer.out_shape == (21,) and layer.params == {} and layer.n_params((7, 3)) == 0
