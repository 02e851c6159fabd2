"""Optimizers with PyTorch's update rules (torch.optim, default flags), updating params in place.

    opt = make_optimizer(spec["optimizer"], params: dict[name, array], flat=None)
    opt.step(grads: dict[name, array], lr)    # grads may be overwritten (used as scratch)
    opt.step(None, lr, flat_grads=g)          # flat mode: one vectorised update of everything
    opt.fused_step(g, lr, bounds, squares)    # flat mode on NumPy, `fusable` optimizers only
    opt.state_arrays() / opt.load_state_arrays(d)  # for checkpoints: plain numeric arrays

`flat`: one contiguous 1-D array of which every param is a view, in `params` order (see
Network.build). The state slots are then flat too (per-name views for checkpoints) and a step
is a few large vectorised calls instead of several per parameter. Every state array has its
param's dtype and array module. `lr` is passed per step so that the schedules stay outside (per
epoch, as torch.optim.lr_scheduler).
"""
from __future__ import annotations

import math
from functools import cached_property
from typing import Any

import numpy as np

from worker.engine.activations import xp_of
from worker.engine.backend import to_device, to_numpy

class Optimizer:
    slots: tuple[str, ...] = ()
    fusable = False  # has a one-pass CPU kernel (cpu_optimizer_steps) for `fused_step`

    def __init__(self, cfg: dict[str, Any], params: dict[str, Any], flat: Any = None) -> None:
        self.cfg = cfg
        self.params = params
        self.flat = flat
        self.t = 0
        self.flat_state = {slot: flat * 0 for slot in self.slots} if flat is not None else {}
        self.state = {slot: self._slot_views(slot) for slot in self.slots}

    def _slot_views(self, slot: str) -> dict[str, Any]:
        if self.flat is None:
            return {k: p * 0 for k, p in self.params.items()}
        views, offset, buf = {}, 0, self.flat_state[slot]
        for k, p in self.params.items():
            views[k] = buf[offset:offset + p.size].reshape(p.shape)
            offset += p.size
        return views

    def step(self, grads: dict[str, Any] | None, lr: float, flat_grads: Any = None) -> None:
        """`flat_grads` (flat mode only): the gradients as one array laid out like `flat`."""
        self.t += 1
        if flat_grads is not None:
            self._update(self.flat, flat_grads, lr, self.flat_state)
            return
        for name, p in self.params.items():
            self._update(p, grads[name], lr, {slot: self.state[slot][name] for slot in self.slots})

    def _update(self, p: Any, g: Any, lr: float, state: dict[str, Any]) -> None:
        raise NotImplementedError

    def fused_step(self, flat_grads: np.ndarray, lr: float, bounds: np.ndarray, squares: np.ndarray) -> None:
        """The same step as `step(None, lr, flat_grads)` in one pass over memory (flat mode, NumPy),
        also writing each parameter's sum of squared gradients (before the step) into `squares`;
        `bounds` (n+1,) are the n `params`' [start, end) offsets in the flat layout (the kernels
        refuse any other n)."""
        from worker.engine import cpu_optimizer_steps  # noqa: PLC0415  (Numba: only where training runs)

        self.t += 1
        self._fused(cpu_optimizer_steps, flat_grads, self.flat.dtype.type, lr, bounds, squares, self._part_sums)

    @cached_property
    def _part_sums(self) -> np.ndarray:
        """fused_step's scratch, one column per parameter: made on the first fused step (not in
        __init__, which would load Numba wherever an optimizer is made), then an attribute."""
        from worker.engine import cpu_optimizer_steps  # noqa: PLC0415

        return cpu_optimizer_steps.part_sums(len(self.params))

    def _fused(self, kernels: Any, g: np.ndarray, dt: Any, lr: float, bounds: np.ndarray, squares: np.ndarray,
               sums: np.ndarray) -> None:
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
    fusable = True

    def _fused(self, kernels, g, dt, lr, bounds, squares, sums):
        kernels.sgd_step(self.flat, g, self.flat_state["momentum_buffer"], dt(lr), dt(self.cfg["momentum"]),
                         bool(self.cfg["nesterov"]), bounds, squares, sums)

    def _update(self, p, g, lr, state):
        # NumPy passes, not SciPy's BLAS axpy (one pass fewer): a wheel's SciPy loads a second
        # OpenBLAS whose threads fought NumPy's (bench mlp --threads 2 ran 5x slower), and
        # pinned to one thread it measured no faster over a whole process (import cost)
        mu = self.cfg["momentum"]
        if mu:
            buf = state["momentum_buffer"]
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
    fusable = True

    def _fused(self, kernels, g, dt, lr, bounds, squares, sums):
        c = self.cfg
        b1, b2 = c["beta1"], c["beta2"]
        betas = [np.array([beta, 1 - beta], g.dtype) for beta in (b1, b2)]  # (beta, 1 - beta) in p's dtype
        kernels.adam_step(self.flat, g, self.flat_state["exp_avg"], self.flat_state["exp_avg_sq"],
                          dt(1 - lr * (c.get("weight_decay") or 0)), *betas, dt(lr / (1 - b1 ** self.t)),
                          dt(1 / math.sqrt(1 - b2 ** self.t)), dt(c["eps"]), bounds, squares, sums)

    def _update(self, p, g, lr, state):
        c = self.cfg
        b1, b2, eps = c["beta1"], c["beta2"], c["eps"]
        xp = _xp(p)
        if c.get("weight_decay"):  # AdamW: decoupled decay first
            p *= 1 - lr * c["weight_decay"]
        m, v = state["exp_avg"], state["exp_avg_sq"]
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

    def _update(self, p, g, lr, state):
        rho, eps, xp = self.cfg["rho"], self.cfg["eps"], _xp(p)
        v = state["square_avg"]
        v *= rho
        v += (1 - rho) * g * g
        denom = xp.sqrt(v) + eps
        g /= denom
        g *= lr
        p -= g


class Adagrad(Optimizer):
    slots = ("sum",)

    def _update(self, p, g, lr, state):
        s, xp = state["sum"], _xp(p)
        s += g * g
        g /= xp.sqrt(s) + self.cfg["eps"]
        g *= lr
        p -= g


_OPTIMIZERS = {"sgd": SGD, "adam": Adam, "adamw": Adam, "rmsprop": RMSprop, "adagrad": Adagrad}


def make_optimizer(cfg: dict[str, Any], params: dict[str, Any], flat: Any = None) -> Optimizer:
    return _OPTIMIZERS[cfg["type"]](cfg, params, flat)
