"""lstm and gru training on NumPy (cpu_recurrent's backward kernels) equal the array formulation
(the layers with `use_kernels` off, as CuPy runs them), NaN included, on the serial and the
parallel kernels; and they pass finite differences."""
from __future__ import annotations

import numpy as np
import pytest

from tests.worker.engine.layer_helpers import build_layer, check_layer_grads

pytestmark = pytest.mark.usefixtures("kernel_variant")
TOLERANCE = {np.float32: {"rtol": 2e-5, "atol": 1e-6}, np.float64: {"rtol": 1e-11, "atol": 1e-13}}


def run(layer, x, upstream):
    out = layer.forward(x.copy(), True).copy()
    dx = layer.backward(upstream.copy(), True).copy()
    return out, dx, {name: grad.copy() for name, grad in layer.grads.items()}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("return_sequences", [False, True])
@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_backward_kernels_equal_the_array_formulation(kind, return_sequences, dtype):
    config = {"type": kind, "units": 6, "return_sequences": return_sequences}
    layers = [build_layer(config, (5, 3), dtype=dtype) for _ in range(2)]
    layers[1].use_kernels = False
    rng = np.random.default_rng(8)
    x = rng.standard_normal((4, 5, 3)).astype(dtype)
    upstream = rng.standard_normal((4, *layers[0].out_shape)).astype(dtype)
    for _ in range(2):  # the second batch reuses the buffers
        (out, dx, grads), (ref_out, ref_dx, ref_grads) = run(layers[0], x, upstream), run(layers[1], x, upstream)
        np.testing.assert_allclose(out, ref_out, **TOLERANCE[dtype])  # the LSTM's cell update is a kernel
        np.testing.assert_allclose(dx, ref_dx, **TOLERANCE[dtype])
        for name, grad in ref_grads.items():
            np.testing.assert_allclose(grads[name], grad, **TOLERANCE[dtype], err_msg=name)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_a_nan_reaches_the_gradients_as_in_the_array_formulation(kind):
    layers = [build_layer({"type": kind, "units": 4}, (3, 2)) for _ in range(2)]
    layers[1].use_kernels = False
    x = np.random.default_rng(9).standard_normal((2, 3, 2))
    x[1, 1, 0] = np.nan
    upstream = np.ones((2, 4))
    (_, dx, grads), (_, ref_dx, ref_grads) = run(layers[0], x, upstream), run(layers[1], x, upstream)
    np.testing.assert_array_equal(np.isnan(dx), np.isnan(ref_dx))
    np.testing.assert_allclose(dx, ref_dx, rtol=1e-11)
    for name, grad in ref_grads.items():
        np.testing.assert_array_equal(np.isnan(grads[name]), np.isnan(grad), err_msg=name)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_backward_kernels_pass_finite_differences(kind):
    layer = build_layer({"type": kind, "units": 3, "return_sequences": True}, (4, 2))
    check_layer_grads(layer, np.random.default_rng(10).standard_normal((2, 4, 2)))
