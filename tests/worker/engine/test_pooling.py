"""maxpool2d / avgpool2d: shapes, finite-difference gradients, parity with torch (float64)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.worker.engine.gradcheck import assert_close
from tests.worker.engine.layer_helpers import build_layer, check_layer_grads
from worker.engine.layers import ShapeError, layer_class

TORCH_POOLS = {"maxpool2d": torch.nn.MaxPool2d, "avgpool2d": torch.nn.AvgPool2d}
CASES = [(2, None, (3, 8, 8)), (2, None, (2, 7, 9)), ([3, 2], [2, 1], (2, 7, 6)), (3, 1, (1, 6, 5))]


def pool(kind, pool_size, stride=None):
    return {"type": kind, "pool_size": pool_size, "stride": stride}


@pytest.mark.parametrize("kind", ["maxpool2d", "avgpool2d"])
@pytest.mark.parametrize("pool_size, stride, in_shape", CASES)
def test_gradients_match_finite_differences(kind, pool_size, stride, in_shape):
    layer = build_layer(pool(kind, pool_size, stride), in_shape)
    x = np.random.default_rng(2).standard_normal((2, *in_shape))
    check_layer_grads(layer, x)


@pytest.mark.parametrize("kind", ["maxpool2d", "avgpool2d"])
@pytest.mark.parametrize("pool_size, stride, in_shape", CASES)
def test_matches_torch(kind, pool_size, stride, in_shape):
    layer = build_layer(pool(kind, pool_size, stride), in_shape)
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, *in_shape))
    torch_pool = TORCH_POOLS[kind](pool_size, stride)
    xt = torch.from_numpy(x).requires_grad_()
    yt = torch_pool(xt)
    y = layer.forward(x, True)
    assert y.shape == (3, *layer.out_shape)
    assert_close(y, yt.detach().numpy(), what="output")
    upstream = rng.standard_normal(y.shape)
    yt.backward(torch.from_numpy(upstream))
    assert_close(layer.backward(upstream, True), xt.grad.numpy(), what="dx")


def test_maxpool_ties_send_the_gradient_to_the_first_maximum_like_torch():
    x = np.zeros((1, 1, 4, 4))  # all ties, as after a ReLU
    x[0, 0, 3, 3] = 1.0
    layer = build_layer(pool("maxpool2d", 2), (1, 4, 4))
    upstream = np.arange(1.0, 5.0).reshape(1, 1, 2, 2)
    layer.forward(x, True)
    dx = layer.backward(upstream, True)
    xt = torch.from_numpy(x).requires_grad_()
    torch.nn.functional.max_pool2d(xt, 2).backward(torch.from_numpy(upstream))
    assert_close(dx, xt.grad.numpy(), what="dx with ties")
    assert dx.sum() == upstream.sum() and np.count_nonzero(dx) == 4


@pytest.mark.parametrize("kind", ["maxpool2d", "avgpool2d"])
def test_pooling_to_zero_size_or_wrong_rank_is_a_shape_error(kind):
    with pytest.raises(ShapeError, match="pooling 3x3 over a 2x5 input gives zero size"):
        layer_class(kind)(pool(kind, 3), 4).output_shape((1, 2, 5))
    with pytest.raises(ShapeError, match="needs \\(channels, height, width\\)"):
        layer_class(kind)(pool(kind, 2), 4).output_shape((16,))


def test_default_stride_is_the_pool_size():
    layer = layer_class("maxpool2d")({"type": "maxpool2d", "pool_size": [2, 3]}, 0)
    assert layer.output_shape((4, 9, 9)) == (4, 4, 3)
