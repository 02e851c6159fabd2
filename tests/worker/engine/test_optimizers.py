"""Optimizers: first steps by PyTorch's definitions (hand-computed) and against torch.optim."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from worker.engine.optimizers import make_optimizer
from worker.engine.spec import OPTIMIZER_SPECS

CASES = [
    {"type": "sgd", "learning_rate": 0.1},
    {"type": "sgd", "learning_rate": 0.1, "momentum": 0.9},
    {"type": "sgd", "learning_rate": 0.1, "momentum": 0.9, "nesterov": True},
    {"type": "adam", "learning_rate": 0.01},
    {"type": "adamw", "learning_rate": 0.01, "weight_decay": 0.1},
    {"type": "rmsprop", "learning_rate": 0.01},
    {"type": "adagrad", "learning_rate": 0.1},
]


def _torch_optimizer(cfg: dict, params: list) -> torch.optim.Optimizer:
    lr = cfg["learning_rate"]
    match cfg["type"]:
        case "sgd":
            return torch.optim.SGD(params, lr=lr, momentum=cfg["momentum"], nesterov=cfg["nesterov"])
        case "adam":
            return torch.optim.Adam(params, lr=lr, betas=(cfg["beta1"], cfg["beta2"]), eps=cfg["eps"])
        case "adamw":
            return torch.optim.AdamW(params, lr=lr, betas=(cfg["beta1"], cfg["beta2"]), eps=cfg["eps"],
                                     weight_decay=cfg["weight_decay"])
        case "rmsprop":
            return torch.optim.RMSprop(params, lr=lr, alpha=cfg["rho"], eps=cfg["eps"])
        case "adagrad":
            return torch.optim.Adagrad(params, lr=lr, eps=cfg["eps"])


def _full(cfg: dict) -> dict:
    return OPTIMIZER_SPECS[cfg["type"]].model_validate(cfg).model_dump()


@pytest.mark.parametrize("raw", CASES, ids=lambda c: "-".join(str(v) for v in c.values()))
def test_matches_torch_optim_over_five_steps(raw):
    cfg, rng = _full(raw), np.random.default_rng(3)
    ours = {"w": rng.standard_normal((4, 3)), "b": rng.standard_normal(3)}
    theirs = [torch.tensor(v.copy(), requires_grad=True) for v in ours.values()]
    opt, topt = make_optimizer(cfg, ours), _torch_optimizer(cfg, theirs)
    for _ in range(5):
        grads = {k: rng.standard_normal(v.shape) for k, v in ours.items()}
        for t, g in zip(theirs, grads.values(), strict=True):
            t.grad = torch.tensor(g.copy())
        opt.step(grads, cfg["learning_rate"])
        topt.step()
    for (name, ours_p), t in zip(ours.items(), theirs, strict=True):
        np.testing.assert_allclose(ours_p, t.detach().numpy(), rtol=1e-10, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("raw", CASES, ids=lambda c: "-".join(str(v) for v in c.values()))
def test_flat_step_equals_per_parameter_steps(raw):
    cfg, rng = _full(raw), np.random.default_rng(4)
    flat = rng.standard_normal(15)
    views = {"w": flat[:12].reshape(4, 3), "b": flat[12:]}
    separate = {k: v.copy() for k, v in views.items()}
    flat_opt, opt = make_optimizer(cfg, views, flat=flat), make_optimizer(cfg, separate)
    for _ in range(3):
        g = rng.standard_normal(15)
        flat_opt.step(None, cfg["learning_rate"], flat_grads=g.copy())
        opt.step({"w": g[:12].reshape(4, 3).copy(), "b": g[12:].copy()}, cfg["learning_rate"])
    for name in views:
        np.testing.assert_allclose(views[name], separate[name], rtol=1e-14, atol=1e-15, err_msg=name)
    state = flat_opt.state_arrays()  # per-name views of the flat state, for checkpoints
    for key, value in opt.state_arrays().items():
        np.testing.assert_allclose(state[key], value, rtol=1e-14, atol=1e-15, err_msg=key)


def test_first_steps_by_hand():
    g1, g2 = np.array([0.5, -2.0]), np.array([1.0, 1.0])
    # SGD momentum 0.9: buf1 = g1, buf2 = 0.9 g1 + g2; p -= lr * buf
    p = {"p": np.zeros(2)}
    opt = make_optimizer(_full({"type": "sgd", "learning_rate": 0.1, "momentum": 0.9}), p)
    opt.step({"p": g1.copy()}, 0.1)
    opt.step({"p": g2.copy()}, 0.1)
    np.testing.assert_allclose(p["p"], -0.1 * g1 - 0.1 * (0.9 * g1 + g2))
    # Adam, first step: m_hat = g, v_hat = g^2 -> p = -lr * g / (|g| + eps)
    p = {"p": np.zeros(2)}
    make_optimizer(_full({"type": "adam", "learning_rate": 0.01}), p).step({"p": g1.copy()}, 0.01)
    np.testing.assert_allclose(p["p"], -0.01 * g1 / (np.abs(g1) + 1e-8))
    # RMSprop (rho 0.9): v = 0.1 g^2 -> p = -lr g / (sqrt(v) + eps)
    p = {"p": np.zeros(2)}
    make_optimizer(_full({"type": "rmsprop", "learning_rate": 0.01}), p).step({"p": g1.copy()}, 0.01)
    np.testing.assert_allclose(p["p"], -0.01 * g1 / (np.sqrt(0.1 * g1**2) + 1e-8))
    # Adagrad: sum = g^2 -> p = -lr g / (|g| + eps)
    p = {"p": np.zeros(2)}
    make_optimizer(_full({"type": "adagrad", "learning_rate": 0.1}), p).step({"p": g1.copy()}, 0.1)
    np.testing.assert_allclose(p["p"], -0.1 * g1 / (np.abs(g1) + 1e-10))


def test_state_keeps_param_dtype_and_round_trips():
    p = {"w": np.ones(3, np.float32)}
    opt = make_optimizer(_full({"type": "adam"}), p)
    opt.step({"w": np.full(3, 0.5, np.float32)}, 0.001)
    assert p["w"].dtype == np.float32
    assert all(v.dtype == np.float32 for slot in opt.state.values() for v in slot.values())
    saved = opt.state_arrays()
    other = make_optimizer(_full({"type": "adam"}), {"w": np.ones(3, np.float32)})
    other.load_state_arrays(saved)
    assert other.t == 1 and math.isclose(float(other.state["exp_avg"]["w"][0]), 0.05, rel_tol=1e-6)
