"""Dense layer: nn.Linear semantics, batch buffers reused across batch sizes, rank-3 input."""
from __future__ import annotations

import numpy as np
import torch

from worker.engine.layers import BuildContext, layer_class


def _dense(in_shape, units=3, activation="tanh"):
    layer = layer_class("dense")({"type": "dense", "units": units, "activation": activation}, 0)
    layer.build(in_shape, BuildContext(np, np.float64, np.random.default_rng(0), np.random.default_rng(0)))
    return layer


def test_forward_backward_match_torch_linear_on_rank_3_input():
    layer = _dense((5, 4))
    linear = torch.nn.Linear(4, 3).double()
    linear.load_state_dict({k.split(".")[1]: torch.from_numpy(v.copy()) for k, v in layer.params.items()})
    x = np.random.default_rng(1).standard_normal((2, 5, 4))
    dy = np.random.default_rng(2).standard_normal((2, 5, 3))
    tx = torch.from_numpy(x).requires_grad_(True)
    t_out = torch.tanh(linear(tx))
    t_out.backward(torch.from_numpy(dy))
    np.testing.assert_allclose(layer.forward(x, True), t_out.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(layer.backward(dy.copy()), tx.grad.numpy(), rtol=1e-10)
    np.testing.assert_allclose(layer.grads["0.weight"], linear.weight.grad.numpy(), rtol=1e-10)
    np.testing.assert_allclose(layer.grads["0.bias"], linear.bias.grad.numpy(), rtol=1e-10)
    assert layer.n_params((5, 4)) == 15 and layer.output_shape((5, 4)) == (5, 3)


def test_smaller_batch_after_larger_reuses_buffers_correctly():
    layer = _dense((4,), activation="relu")
    rng = np.random.default_rng(3)
    big, small = rng.standard_normal((8, 4)), rng.standard_normal((3, 4))
    layer.forward(big, True)
    out = layer.forward(small, True).copy()
    np.testing.assert_allclose(out, np.maximum(small @ layer.params["0.weight"].T, 0))
    assert layer.backward(np.ones((3, 3)), need_input_grad=False) is None
