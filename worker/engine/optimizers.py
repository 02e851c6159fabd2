"""Optimizers with PyTorch's update rules (torch.optim, default flags), updating params in place.

    opt = make_optimizer(spec["optimizer"], params: dict[name, array])
    opt.step(grads: dict[name, array], lr)    # grads may be overwritten (used as scratch)
    opt.state_arrays() / opt.load_state_arrays(d)  # for checkpoints: plain numeric arrays

Every state array has its param's dtype and array module. `lr` is passed per step so that the
schedules stay outside (per epoch, as torch.optim.lr_scheduler).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from worker.engine.activations import xp_of
from worker.engine.backend import to_device, to_numpy


class Optimizer:
    slots: tuple[str, ...] = ()

    def __init__(self, cfg: dict[str, Any], params: dict[str, Any]) -> None:
        self.cfg = cfg
        self.params = params
        self.t = 0
        self.state = {slot: {k: p * 0 for k, p in params.items()} for slot in self.slots}

    def step(self, grads: dict[str, Any], lr: float) -> None:
        self.t += 1
        for name, p in self.params.items():
            self._update(name, p, grads[name], lr)

    def _update(self, name: str, p: Any, g: Any, lr: float) -> None:
        raise NotImplementedError

    def state_arrays(self) -> dict[str, np.ndarray]:
        out = {"t": np.asarray(self.t, np.int64)}
        for slot, arrays in self.state.items():
            out.update({f"{slot}/{k}": to_numpy(v).copy() for k, v in arrays.items()})
        return out

    def load_state_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        self.t = int(arrays["t"])
        for slot, state in self.state.items():
            for k, v in state.items():
                v[...] = to_device(arrays[f"{slot}/{k}"], _xp(v), v.dtype)


_xp = xp_of


class SGD(Optimizer):
    slots = ("momentum_buffer",)

    def _update(self, name, p, g, lr):
        mu = self.cfg["momentum"]
        if mu:
            buf = self.state["momentum_buffer"][name]
            buf *= mu
            buf += g
            if self.cfg["nesterov"]:
                g += mu * buf  # g = g + mu * buf
                g *= lr
            else:
                _xp(p).multiply(buf, lr, out=g)
        else:
            g *= lr
        p -= g


class Adam(Optimizer):
    slots = ("exp_avg", "exp_avg_sq")

    def _update(self, name, p, g, lr):
        c = self.cfg
        b1, b2, eps = c["beta1"], c["beta2"], c["eps"]
        xp = _xp(p)
        if c.get("weight_decay"):  # AdamW: decoupled decay first
            p *= 1 - lr * c["weight_decay"]
        m, v = self.state["exp_avg"][name], self.state["exp_avg_sq"][name]
        m *= b1
        m += (1 - b1) * g
        v *= b2
        g *= g
        g *= 1 - b2
        v += g
        bias1, bias2 = 1 - b1 ** self.t, 1 - b2 ** self.t
        denom = xp.sqrt(v, out=g)
        denom /= math.sqrt(bias2)
        denom += eps
        xp.divide(m, denom, out=g)
        g *= lr / bias1
        p -= g


class RMSprop(Optimizer):
    slots = ("square_avg",)

    def _update(self, name, p, g, lr):
        rho, eps, xp = self.cfg["rho"], self.cfg["eps"], _xp(p)
        v = self.state["square_avg"][name]
        v *= rho
        v += (1 - rho) * g * g
        denom = xp.sqrt(v) + eps
        g /= denom
        g *= lr
        p -= g


class Adagrad(Optimizer):
    slots = ("sum",)

    def _update(self, name, p, g, lr):
        s, xp = self.state["sum"][name], _xp(p)
        s += g * g
        g /= xp.sqrt(s) + self.cfg["eps"]
        g *= lr
        p -= g


_OPTIMIZERS = {"sgd": SGD, "adam": Adam, "adamw": Adam, "rmsprop": RMSprop, "adagrad": Adagrad}


def make_optimizer(cfg: dict[str, Any], params: dict[str, Any]) -> Optimizer:
    return _OPTIMIZERS[cfg["type"]](cfg, params)
