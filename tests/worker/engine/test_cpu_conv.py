"""conv2d and maxpool2d in training on NumPy (cpu_conv's kernels) equal the array formulation
(the layers with `use_kernels` off, as prediction and CuPy run them), NaN and inf included, on
the serial and the parallel kernels."""
from __future__ import annotations

import numpy as np
import pytest

from tests.worker.engine.layer_helpers import build_layer, check_layer_grads
from worker.engine.layers import conv as conv_module

pytestmark = pytest.mark.usefixtures("kernel_variant")
TOLERANCE = {np.float32: {"rtol": 1e-5, "atol": 1e-6}, np.float64: {"rtol": 1e-12, "atol": 1e-13}}
CONVS = [
    ({"filters": 3, "kernel_size": 3}, (2, 7, 6)),
    ({"filters": 2, "kernel_size": [3, 2], "stride": 2, "padding": 1, "activation": "relu"}, (3, 7, 8)),
    ({"filters": 4, "kernel_size": 4, "padding": "same", "activation": "relu"}, (1, 6, 5)),
    ({"filters": 2, "kernel_size": 2, "stride": [1, 2], "padding": [0, 1], "activation": "tanh"}, (2, 5, 6)),
    ({"filters": 2, "kernel_size": 3, "activation": "gelu"}, (1, 5, 5)),
    ({"filters": 2, "kernel_size": 2, "stride": 3, "padding": 2}, (1, 5, 7)),  # windows wholly in the padding
]
POOLS = [({"pool_size": 2}, (3, 6, 6)), ({"pool_size": 2}, (2, 7, 5)),  # 2x2: the unrolled kernels
         ({"pool_size": 3, "stride": 2}, (2, 7, 7)),
         ({"pool_size": [2, 3], "stride": [1, 2]}, (2, 5, 7))]


def pair_of_layers(kind: str, config: dict, in_shape: tuple, dtype):
    """(kernels, reference): the same layer built twice, the second on the array formulation."""
    layers = [build_layer({"type": kind, **config}, in_shape, dtype=dtype) for _ in range(2)]
    layers[1].use_kernels = False
    return layers


def run_both(layers, x, upstream):
    with np.errstate(invalid="ignore"):  # inf * 0 in the array formulation's masks, on purpose
        outs = [layer.forward(x.copy(), True).copy() for layer in layers]
        dxs = [layer.backward(upstream.copy(), True).copy() for layer in layers]
    return outs, dxs


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("config", "in_shape"), CONVS)
def test_conv_kernels_equal_the_array_formulation(config, in_shape, dtype):
    layers = pair_of_layers("conv2d", config, in_shape, dtype)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((5, *in_shape)).astype(dtype)
    upstream = rng.standard_normal((5, *layers[0].out_shape)).astype(dtype)
    for _ in range(2):  # the second batch reuses every buffer
        (out, ref_out), (dx, ref_dx) = run_both(layers, x, upstream)
        np.testing.assert_allclose(out, ref_out, **TOLERANCE[dtype])
        np.testing.assert_allclose(dx, ref_dx, **TOLERANCE[dtype])
        for name, grad in layers[1].grads.items():
            np.testing.assert_allclose(layers[0].grads[name], grad, **TOLERANCE[dtype], err_msg=name)


def test_conv_kernels_pass_nan_and_inf_as_the_array_formulation_does():
    layers = pair_of_layers("conv2d", {"filters": 2, "kernel_size": 3, "padding": 1, "activation": "relu"},
                            (1, 5, 5), np.float64)
    x = np.random.default_rng(4).standard_normal((2, 1, 5, 5))
    x[0, 0, 2, 2] = np.nan
    upstream = np.ones((2, 2, 5, 5))
    upstream[1, 0, 1, 1] = np.inf
    (out, ref_out), (dx, ref_dx) = run_both(layers, x, upstream)
    np.testing.assert_array_equal(np.isnan(out), np.isnan(ref_out))
    np.testing.assert_allclose(out, ref_out, rtol=1e-12)
    np.testing.assert_allclose(dx, ref_dx, rtol=1e-12)
    for name, grad in layers[1].grads.items():
        np.testing.assert_allclose(layers[0].grads[name], grad, rtol=1e-12, err_msg=name)


@pytest.mark.parametrize(("config", "in_shape"), CONVS[:3])
def test_conv_kernels_pass_finite_differences(config, in_shape):
    layer = build_layer({"type": "conv2d", **config}, in_shape)
    check_layer_grads(layer, np.random.default_rng(5).standard_normal((3, *in_shape)))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("config", "in_shape"), POOLS)
def test_maxpool_kernels_equal_the_array_formulation_ties_nan_and_inf_included(config, in_shape, dtype):
    layers = pair_of_layers("maxpool2d", config, in_shape, dtype)
    rng = np.random.default_rng(6)
    x = rng.integers(-3, 3, (4, *in_shape)).astype(dtype)  # many ties: the first maximum wins
    x[0, 0, 1, 1], x[1, 1, 0, 0], x[2, 0, 0, 1] = np.nan, np.inf, -np.inf
    upstream = rng.standard_normal((4, *layers[0].out_shape)).astype(dtype)
    upstream[3, 1, 0, 0], upstream[2, 0, 1, 1] = np.inf, np.nan
    (out, ref_out), (dx, ref_dx) = run_both(layers, x, upstream)
    np.testing.assert_array_equal(out, ref_out)
    np.testing.assert_array_equal(dx, ref_dx)


@pytest.mark.parametrize(("config", "in_shape"), POOLS)
def test_maxpool_kernels_pass_finite_differences(config, in_shape):
    layer = build_layer({"type": "maxpool2d", **config}, in_shape)
    check_layer_grads(layer, np.random.default_rng(7).standard_normal((2, *in_shape)))


@pytest.mark.parametrize("grouped_below", [1024, 1])  # the weight gradient grouped, or one product
@pytest.mark.parametrize("per_group", [1, 2, 6])
def test_products_in_groups_of_samples_equal_the_array_formulation(monkeypatch, per_group, grouped_below):
    """The products run per group of samples (sample_groups); outputs and gradients unchanged."""
    config, in_shape = {"filters": 2, "kernel_size": 3, "padding": 1, "activation": "relu"}, (2, 5, 4)
    layers = pair_of_layers("conv2d", config, in_shape, np.float64)
    macs_per_sample = 2 * 18 * 20  # filters x C*kh*kw x Ho*Wo
    monkeypatch.setattr(conv_module, "SMALL_PRODUCT", macs_per_sample * per_group)
    monkeypatch.setattr(conv_module, "GROUPED_BELOW_OUTPUT", grouped_below)
    assert conv_module.sample_groups(6, macs_per_sample) == 6 // per_group
    rng = np.random.default_rng(8)
    x, upstream = rng.standard_normal((6, *in_shape)), rng.standard_normal((6, *layers[0].out_shape))
    for _ in range(2):  # the second batch reuses every buffer
        (out, ref_out), (dx, ref_dx) = run_both(layers, x, upstream)
        np.testing.assert_allclose(out, ref_out, **TOLERANCE[np.float64])
        np.testing.assert_allclose(dx, ref_dx, **TOLERANCE[np.float64])
        for name, grad in layers[1].grads.items():
            np.testing.assert_allclose(layers[0].grads[name], grad, **TOLERANCE[np.float64], err_msg=name)


def test_sample_groups_are_equal_and_within_the_small_product():
    assert conv_module.sample_groups(64, 4608) == 1  # 64 x 4608 multiply-adds fit in one product
    assert conv_module.sample_groups(64, 200 * 576) == 8  # 8 samples a group: 922k each
    assert conv_module.sample_groups(7, 300_000) == 7  # 3 would fit, but 7 is prime
    assert conv_module.sample_groups(5, 2_000_000) == 5  # one sample a group at most
