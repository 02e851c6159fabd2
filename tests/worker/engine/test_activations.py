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
