"""rnn / lstm / gru: finite-difference BPTT gradients and parity with torch (float64)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.worker.engine.gradcheck import assert_close, directional_grad
from tests.worker.engine.layer_helpers import build_layer, check_layer_grads
from worker.engine.layers import ShapeError, layer_class

KINDS = ["rnn", "lstm", "gru"]
TORCH_MODULES = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}
GATES = {"rnn": 1, "lstm": 4, "gru": 3}


def rec(kind, units, return_sequences=False):
    return {"type": kind, "units": units, "return_sequences": return_sequences}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("return_sequences", [False, True])
def test_gradients_match_finite_differences(kind, return_sequences):
    layer = build_layer(rec(kind, 4, return_sequences), (5, 3))
    x = np.random.default_rng(1).standard_normal((3, 5, 3))
    check_layer_grads(layer, x)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("return_sequences", [False, True])
def test_matches_torch_outputs_and_gradients(kind, return_sequences):
    layer = build_layer(rec(kind, 6, return_sequences), (7, 4), seed=3)
    module = TORCH_MODULES[kind](4, 6, batch_first=True).double()
    module.load_state_dict({k.split(".", 1)[1]: torch.from_numpy(v) for k, v in layer.params.items()})
    rng = np.random.default_rng(4)
    x = rng.standard_normal((5, 7, 4))
    xt = torch.from_numpy(x).requires_grad_()
    seq = module(xt)[0]
    yt = seq if return_sequences else seq[:, -1]
    y = layer.forward(x, True)
    assert_close(y, yt.detach().numpy(), what="output")
    upstream = rng.standard_normal(y.shape)
    yt.backward(torch.from_numpy(upstream))
    assert_close(layer.backward(upstream, True), xt.grad.numpy(), what="dx")
    for name, param in module.named_parameters():
        assert_close(layer.grads[f"0.{name}"], param.grad.numpy(), what=name)


@pytest.mark.parametrize("kind", KINDS)
def test_stack_of_recurrent_layers_backpropagates_through_both(kind):
    """Layer 0 returns sequences into layer 1; checks d loss / d (x, every param) of the stack."""
    first = build_layer(rec(kind, 5, True), (6, 3), seed=1, index=0)
    second = build_layer(rec(kind, 4), first.out_shape, seed=2, index=1)
    rng = np.random.default_rng(6)
    x = rng.standard_normal((3, 6, 3))
    upstream = rng.standard_normal((3, 4))

    def loss() -> float:
        return float(np.sum(second.forward(first.forward(x, True), True) * upstream))

    loss()
    dx = first.backward(second.backward(upstream, True), True)
    analytic = {"x": dx, **first.grads, **second.grads}
    arrays = {"x": x, **first.params, **second.params}
    assert len(arrays) == 9
    for name, array in arrays.items():
        for _ in range(2):
            direction = rng.standard_normal(array.shape)
            numeric = directional_grad(loss, array, direction)
            assert_close(np.array(np.sum(analytic[name] * direction)), np.array(numeric),
                         rtol=1e-6, what=name)


@pytest.mark.parametrize("kind", KINDS)
def test_param_names_shapes_and_init_like_torch(kind):
    layer = build_layer(rec(kind, 8), (10, 3))
    module = TORCH_MODULES[kind](3, 8, batch_first=True)
    assert {k.split(".", 1)[1]: v.shape for k, v in layer.params.items()} == {
        k: tuple(v.shape) for k, v in module.state_dict().items()}
    assert layer.n_params((10, 3)) == sum(p.numel() for p in module.parameters())
    bound = 1 / np.sqrt(8)
    for value in layer.params.values():
        assert np.abs(value).max() <= bound and np.abs(value).max() > 0.8 * bound


@pytest.mark.parametrize("kind", KINDS)
def test_recurrent_layer_on_non_sequence_input_is_a_shape_error(kind):
    with pytest.raises(ShapeError, match="a recurrent layer needs \\(T, F\\) input"):
        layer_class(kind)(rec(kind, 4), 2).output_shape((16,))
    assert layer_class(kind)(rec(kind, 4, True), 2).output_shape((9, 2)) == (9, 4)


@pytest.mark.parametrize("kind", KINDS)
def test_float32_and_a_second_batch_size_reuse_buffers_correctly(kind):
    layer = build_layer(rec(kind, 6), (5, 2), dtype=np.float32)
    rng = np.random.default_rng(0)
    big = rng.standard_normal((4, 5, 2)).astype(np.float32)
    first = layer.forward(big, True)
    layer.forward(big[:3], True)  # another shape in between must not corrupt the first result
    again = layer.forward(big, True)
    assert first.dtype == np.float32 and first.shape == (4, 6)
    np.testing.assert_array_equal(first, again)
    np.testing.assert_allclose(layer.forward(big[:1], True), again[:1], rtol=1e-5, atol=1e-6)
