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


def _step(layer, x, dy):
    """(output, dL/dx, dL/dweight, dL/dbias) of one forward and backward pass, copied."""
    out = layer.forward(x, True).copy()
    dx = layer.backward(dy.copy())
    return out, dx.copy(), layer.grads["0.weight"].copy(), layer.grads["0.bias"].copy()


def _same_params(layer, activation):
    fresh = _dense((4,), activation=activation)
    for name, value in layer.params.items():
        fresh.params[name][...] = value
    return fresh


def test_a_step_after_a_capacity_change_runs_in_the_new_buffers_with_the_same_gradients():
    layer, rng = _dense((4,)), np.random.default_rng(4)
    x, dy = rng.standard_normal((5, 4)), rng.standard_normal((5, 3))
    _step(layer, rng.standard_normal((5, 4)), rng.standard_normal((5, 3)))
    layer._ensure_capacity(16)  # buffers replaced while the batch size stays
    out = layer.forward(x, True)
    assert np.shares_memory(out, layer._a)  # not the views of the buffers it had before
    for ours, fresh in zip(_step(layer, x, dy), _step(_same_params(layer, "tanh"), x, dy), strict=True):
        np.testing.assert_allclose(ours, fresh, rtol=1e-12)


def test_an_activation_that_needs_z_set_after_a_step_gets_z_kept_apart_from_a():
    layer, rng = _dense((4,), activation="tanh"), np.random.default_rng(5)  # tanh: z and a share one buffer
    x, dy = rng.standard_normal((6, 4)), rng.standard_normal((6, 3))
    _step(layer, x, dy)
    layer.set_activation("gelu")  # gelu's backward reads z
    for ours, fresh in zip(_step(layer, x, dy), _step(_same_params(layer, "gelu"), x, dy), strict=True):
        np.testing.assert_allclose(ours, fresh, rtol=1e-12)


def test_an_empty_batch_on_a_fresh_layer():
    layer = _dense((4,))
    assert layer.forward(np.empty((0, 4)), True).shape == (0, 3)
    assert layer.backward(np.empty((0, 3))).shape == (0, 4)
