"""Batch normalisation over the channel axis 1 = nn.BatchNorm1d for (N, C) and (N, C, L),
nn.BatchNorm2d for (N, C, H, W), chosen by input rank.

Training normalises with the batch's biased variance and updates the running statistics with
PyTorch's convention: running = (1 - momentum) * running + momentum * batch_stat, the variance
unbiased (m / (m - 1)). Prediction uses the running statistics. Params "{i}.weight" (gamma,
ones) and "{i}.bias" (beta, zeros) of shape (C,); buffers "{i}.running_mean", "{i}.running_var"
and "{i}.num_batches_tracked" (so torch's load_state_dict accepts the state strictly).
Gamma gets no l2 penalty (only dense/conv/recurrent weights do).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from worker.engine.layers import register
from worker.engine.layers.base import BuildContext, Layer, ShapeError


@register
class BatchNorm(Layer):
    kind = "batchnorm"
    l2_param_suffixes = ()

    def __init__(self, config: dict[str, Any], index: int) -> None:
        super().__init__(config, index)
        self.momentum = float(config.get("momentum", 0.1))
        self.eps = float(config.get("eps", 1e-5))

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        if not 1 <= len(input_shape) <= 3:
            raise ShapeError(f"batchnorm takes (C,), (C, L) or (C, H, W) per sample, got {list(input_shape)}")
        return tuple(input_shape)

    def n_params(self, input_shape: tuple[int, ...]) -> int:
        return 2 * int(input_shape[0])

    def build(self, input_shape: tuple[int, ...], ctx: BuildContext) -> tuple[int, ...]:
        out = super().build(input_shape, ctx)
        xp, c = ctx.xp, int(input_shape[0])
        self.params = {self.name("weight"): xp.ones(c, ctx.dtype), self.name("bias"): xp.zeros(c, ctx.dtype)}
        self.grads = {k: xp.zeros_like(v) for k, v in self.params.items()}
        self.buffers = {self.name("running_mean"): xp.zeros(c, ctx.dtype),
                        self.name("running_var"): xp.ones(c, ctx.dtype),
                        self.name("num_batches_tracked"): xp.zeros((), np.int64)}
        # (1, C) or (1, C, 1[, 1]): broadcasts a per-channel vector against the input
        self._bshape = (1, c) + (1,) * (len(input_shape) - 1)
        self._axes = (0,) + tuple(range(2, len(input_shape) + 1))
        return out

    def forward(self, x: Any, training: bool) -> Any:
        """x (N, C, ...) -> same shape."""
        gamma, beta = (p.reshape(self._bshape) for p in self.params.values())
        mean_buf, var_buf, count = self.buffers.values()
        if not training:
            inv = 1.0 / self.xp.sqrt(var_buf + self.eps)
            return (x - mean_buf.reshape(self._bshape)) * (inv * self.params[self.name("weight")]).reshape(
                self._bshape) + beta
        m = x.size // x.shape[1]
        mean = x.mean(axis=self._axes, keepdims=True)
        centred = x - mean
        var = (centred * centred).mean(axis=self._axes, keepdims=True)
        self._inv_std = 1.0 / self.xp.sqrt(var + self.eps)
        self._xhat = centred * self._inv_std
        mean_buf *= 1 - self.momentum
        mean_buf += self.momentum * mean.reshape(-1)
        var_buf *= 1 - self.momentum
        var_buf += (self.momentum * m / max(m - 1, 1)) * var.reshape(-1)
        count += 1
        return self._xhat * gamma + beta

    def backward(self, grad_out: Any, need_input_grad: bool = True) -> Any:
        gamma = self.params[self.name("weight")].reshape(self._bshape)
        gw, gb = self.grads.values()
        gb[...] = grad_out.sum(axis=self._axes)
        gw[...] = (grad_out * self._xhat).sum(axis=self._axes)
        if not need_input_grad:
            return None
        dxhat = grad_out * gamma
        mean_d = dxhat.mean(axis=self._axes, keepdims=True)
        mean_dx = (dxhat * self._xhat).mean(axis=self._axes, keepdims=True)
        return (dxhat - mean_d - self._xhat * mean_dx) * self._inv_std
