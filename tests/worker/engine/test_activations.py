"""Activations: forward against torch, backward against finite differences (float64)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.worker.engine.gradcheck import assert_close, numeric_grad
from worker.engine.activations import ACTIVATIONS, get_activation

TORCH = {"linear": lambda t: t, "relu": torch.relu, "sigmoid": torch.sigmoid, "tanh": torch.tanh,
         "leaky_relu": torch.nn.functional.leaky_relu, "elu": torch.nn.functional.elu,
         "gelu": torch.nn.functional.gelu, "softplus": torch.nn.functional.softplus,
         "softmax": lambda t: torch.softmax(t, -1)}


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_forward_matches_torch_and_backward_matches_finite_differences(name):
    act, rng = get_activation(name), np.random.default_rng(0)
    z = rng.standard_normal((5, 4)) * 3
    a = act.forward(z.copy())
    np.testing.assert_allclose(a, TORCH[name](torch.from_numpy(z)).numpy(), rtol=1e-12, atol=1e-14)
    weights = rng.standard_normal(z.shape)
    grad = act.backward(weights.copy(), z, a)
    numeric = numeric_grad(lambda: float((act.forward(z.copy()) * weights).sum()), z)
    assert_close(grad, numeric, what=name)


@pytest.mark.parametrize("name", ["sigmoid", "softplus", "softmax"])
def test_extreme_inputs_stay_finite(name):
    z = np.array([[-1000.0, 0.0, 1000.0]], dtype=np.float32)
    assert np.isfinite(get_activation(name).forward(z.copy())).all()


def test_in_place_forward_and_unknown_name():
    z = np.array([-1.0, 2.0])
    assert get_activation("relu").forward(z, out=z) is z and z.tolist() == [0.0, 2.0]
    with pytest.raises(ValueError, match="unknown activation"):
        get_activation("swish")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu_zeros_row_path_equals_scalar_maximum_for_any_width(dtype):
    relu, rng = get_activation("relu"), np.random.default_rng(5)
    for shape in [(4, 7), (3, 5), (2, 3, 5)]:  # width changes: the cached zeros row follows
        z = rng.standard_normal(shape).astype(dtype)
        z[0, 0] = -0.0
        expected = np.maximum(z, 0)
        out = relu.forward(z.copy())
        assert out.dtype == dtype
        np.testing.assert_array_equal(out, expected)
        in_place = z.copy()
        assert relu.forward(in_place, out=in_place) is in_place
        np.testing.assert_array_equal(in_place, expected)
