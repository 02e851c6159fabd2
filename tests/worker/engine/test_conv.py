"""conv2d: shapes, finite-difference gradients and parity with torch.nn.Conv2d (float64)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.worker.engine.gradcheck import assert_close
from tests.worker.engine.layer_helpers import build_layer, check_layer_grads
from worker.engine.layers import ShapeError, conv as conv_module, layer_class


@pytest.fixture(params=["batch_last", "batch_second"])
def layout(request, monkeypatch):
    """Runs a test under both working layouts of im2col (chosen by output width in use)."""
    monkeypatch.setattr(conv_module, "BATCH_LAST_BELOW_WIDTH", 10**6 if request.param == "batch_last" else 0)
    return request.param


def conv(filters=3, kernel_size=3, stride=1, padding=0, activation="linear"):
    return {"type": "conv2d", "filters": filters, "kernel_size": kernel_size, "stride": stride,
            "padding": padding, "activation": activation}


@pytest.mark.parametrize("config, in_shape, out_shape", [
    (conv(4, 3), (2, 7, 7), (4, 5, 5)),
    (conv(4, [3, 2], stride=2), (2, 7, 8), (4, 3, 4)),
    (conv(4, 3, padding=1), (1, 5, 5), (4, 5, 5)),
    (conv(4, 4, padding="same"), (1, 5, 6), (4, 5, 6)),
    (conv(4, [2, 3], stride=[1, 2], padding=[1, 0]), (1, 5, 6), (4, 6, 2)),
])
def test_output_shape_matches_torch(config, in_shape, out_shape):
    layer = layer_class("conv2d")(config, 0)
    assert layer.output_shape(in_shape) == out_shape
    pad = config["padding"]
    torch_conv = torch.nn.Conv2d(in_shape[0], config["filters"], config["kernel_size"],
                                 config["stride"], pad)
    assert tuple(torch_conv(torch.zeros(1, *in_shape)).shape[1:]) == out_shape
    assert layer.n_params(in_shape) == sum(p.numel() for p in torch_conv.parameters())


@pytest.mark.parametrize("config, in_shape, message", [
    (conv(2, 5), (1, 3, 3), "kernel 5x5 is larger than its padded input 3x3"),
    (conv(2, 3), (9,), "needs (channels, height, width) input"),
    (conv(2, 3, stride=2, padding="same"), (1, 8, 8), "'same' needs stride 1"),
])
def test_impossible_shapes_raise_a_clear_shape_error(config, in_shape, message):
    with pytest.raises(ShapeError, match="layer 0 \\(conv2d\\)") as info:
        layer_class("conv2d")(config, 0).output_shape(in_shape)
    assert message in str(info.value)


@pytest.mark.parametrize("config, in_shape", [
    (conv(3, 3), (2, 5, 5)),
    (conv(2, [3, 2], stride=2), (2, 7, 6)),
    (conv(2, 3, stride=[2, 1], padding=1), (1, 5, 4)),
    (conv(2, 4, padding="same"), (2, 5, 5)),
    (conv(2, 2, activation="tanh"), (1, 4, 4)),
    (conv(2, 3, activation="relu"), (1, 5, 5)),
])
def test_gradients_match_finite_differences(config, in_shape, layout):
    layer = build_layer(config, in_shape)
    x = np.random.default_rng(3).standard_normal((2, *in_shape))
    check_layer_grads(layer, x)


def test_large_conv_gradients_along_random_directions(layout):
    layer = build_layer(conv(6, 5, stride=2, padding=2), (3, 12, 12))
    x = np.random.default_rng(4).standard_normal((4, 3, 12, 12))
    check_layer_grads(layer, x, max_elementwise=0)


@pytest.mark.parametrize("kernel, stride, padding", [
    (3, 1, 0), ([3, 2], [2, 1], [1, 2]), (4, 1, "same"), (5, 2, 2),
])
def test_matches_torch_outputs_and_gradients(kernel, stride, padding, layout):
    layer = build_layer(conv(5, kernel, stride, padding), (3, 9, 10), seed=7)
    assert layer.layout.batch_last == (layout == "batch_last")
    rng = np.random.default_rng(8)
    layer.params["0.bias"][...] = rng.standard_normal(5)  # our init zeroes the bias
    x = rng.standard_normal((4, 3, 9, 10))
    torch_conv = torch.nn.Conv2d(3, 5, kernel, stride, padding).double()
    torch_conv.load_state_dict({k.split(".", 1)[1]: torch.from_numpy(v) for k, v in layer.params.items()})
    xt = torch.from_numpy(x).requires_grad_()
    yt = torch_conv(xt)
    y = layer.forward(x, True)
    assert_close(y, yt.detach().numpy(), what="output")
    upstream = rng.standard_normal(y.shape)
    yt.backward(torch.from_numpy(upstream))
    dx = layer.backward(upstream, True)
    assert_close(dx, xt.grad.numpy(), what="dx")
    assert_close(layer.grads["0.weight"], torch_conv.weight.grad.numpy(), what="weight")
    assert_close(layer.grads["0.bias"], torch_conv.bias.grad.numpy(), what="bias")


def test_float32_stays_float32_and_skips_input_grad_when_asked(layout):
    layer = build_layer(conv(4, 3, activation="relu"), (2, 6, 6), dtype=np.float32)
    x = np.random.default_rng(0).standard_normal((3, 2, 6, 6)).astype(np.float32)
    y = layer.forward(x, True)
    assert y.dtype == np.float32 and y.shape == (3, 4, 4, 4)
    assert layer.backward(np.ones_like(y), need_input_grad=False) is None
    assert all(g.dtype == np.float32 for g in layer.grads.values())


@pytest.mark.parametrize("use_kernels", [True, False])
@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_an_empty_batch_trains_to_zero_gradients(activation, use_kernels, layout):
    """0 rows, as dense takes them: empty outputs, zero gradients, and a batch after it as usual."""
    layer = build_layer(conv(3, 3, activation=activation), (2, 6, 6))
    layer.use_kernels = use_kernels
    for rows in (0, 2, 0):
        x = np.random.default_rng(rows).standard_normal((rows, 2, 6, 6))
        assert layer.forward(x, True).shape == (rows, 3, 4, 4)
        assert layer.backward(np.ones((rows, 3, 4, 4)), True).shape == (rows, 2, 6, 6)
        total = sum(float(np.abs(grad).sum()) for grad in layer.grads.values())
        assert (total == 0) == (rows == 0)
