"""Losses against torch's (mean reduction), stable at extreme logits."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from worker.engine.losses import get_loss

TORCH = {"mse": torch.nn.MSELoss(), "mae": torch.nn.L1Loss(), "huber": torch.nn.HuberLoss(),
         "cross_entropy": torch.nn.CrossEntropyLoss(), "binary_cross_entropy": torch.nn.BCEWithLogitsLoss()}


def _case(name: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    out = rng.standard_normal((6, 3)) * 2
    if name == "cross_entropy":
        return out, rng.integers(0, 3, 6)
    if name == "binary_cross_entropy":
        return out, rng.integers(0, 2, (6, 3)).astype(float)
    return out, rng.standard_normal((6, 3))


@pytest.mark.parametrize("name", list(TORCH))
def test_value_and_gradient_match_torch(name):
    out, y = _case(name, np.random.default_rng(0))
    t_out = torch.from_numpy(out.copy()).requires_grad_(True)
    t_loss = TORCH[name](t_out, torch.from_numpy(y))
    t_loss.backward()
    loss = get_loss(name)
    value, grad = loss.value_and_grad(out, y)
    assert float(value) == pytest.approx(t_loss.item(), rel=1e-12)
    assert float(loss.value(out, y)) == pytest.approx(t_loss.item(), rel=1e-12)
    np.testing.assert_allclose(grad, t_out.grad.numpy(), rtol=1e-10, atol=1e-14)


def test_single_column_targets_and_extreme_logits():
    mse = get_loss("mse")
    assert float(mse.value(np.array([[1.0], [3.0]]), np.array([0.0, 1.0]))) == pytest.approx(2.5)
    logits = np.array([[1000.0, -1000.0]], dtype=np.float32)
    value, grad = get_loss("cross_entropy").value_and_grad(logits, np.array([1]))
    assert float(value) == pytest.approx(2000.0) and np.isfinite(grad).all()
    bce_value, _ = get_loss("binary_cross_entropy").value_and_grad(np.array([[-500.0]]), np.array([1.0]))
    assert float(bce_value) == pytest.approx(500.0)
