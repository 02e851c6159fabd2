"""Dense (fully connected) layer = torch.nn.Linear followed by the spec's activation.

Params "{i}.weight" (units, in_features) and "{i}.bias" (units,). Inputs of rank > 2 are
transformed along the last axis, as nn.Linear does. Buffers for the batch are allocated once
per capacity and reused as views for smaller batches; the activation runs in place unless it
needs its input (gelu). Backward overwrites the incoming gradient buffer (it is the next
layer's scratch) and skips dL/dx when `need_input_grad` is false (the first layer).
"""
from __future__ import annotations

from typing import Any

from worker.engine.activations import get_activation, initial_weight
from worker.engine.layers import register
from worker.engine.layers.base import BuildContext, Layer, ShapeError


@register
class Dense(Layer):
    kind = "dense"

    def __init__(self, config: dict[str, Any], index: int) -> None:
        super().__init__(config, index)
        self.units = config.get("units")
        self.activation = get_activation(config.get("activation"))
        self._capacity = self._view_rows = -1  # no buffers, no views (a 0-row batch gets both)

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(input_shape) < 1:
            raise ShapeError("dense needs at least a 1-D input")
        if self.units is None:
            raise ShapeError("units is not known yet")
        return (*input_shape[:-1], int(self.units))

    def n_params(self, input_shape: tuple[int, ...]) -> int:
        return (int(input_shape[-1]) + 1) * int(self.units or 0)

    def build(self, input_shape: tuple[int, ...], ctx: BuildContext) -> tuple[int, ...]:
        out_shape = super().build(input_shape, ctx)
        fan_in, xp = int(input_shape[-1]), ctx.xp
        w = initial_weight(ctx.init_rng, (self.units, fan_in), fan_in, self.units,
                           self.activation.name, ctx.dtype)
        self.params = {self.name("weight"): xp.asarray(w), self.name("bias"): xp.zeros(self.units, ctx.dtype)}
        self.grads = {k: xp.zeros_like(v) for k, v in self.params.items()}
        self.bind_params()
        self._rows_per_sample = 1
        for d in input_shape[:-1]:
            self._rows_per_sample *= int(d)
        return out_shape

    def bind_params(self) -> None:
        self.weight, self.bias = self.params.values()
        self.grad_weight, self.grad_bias = self.grads.values()
        self._weight_t = self.weight.T  # a view: follows the in-place updates

    def set_activation(self, name: str) -> None:
        """Used by the network to run a fused output layer (softmax/sigmoid + loss) on logits."""
        self.activation = get_activation(name)
        self._capacity = self._view_rows = -1  # new buffers: whether z has one of its own depends on it

    def _ensure_capacity(self, rows: int) -> None:
        if rows <= self._capacity:
            return
        xp, fan_in = self.xp, self.weight.shape[1]
        self._a = xp.empty((rows, self.units), self.dtype)
        self._z = xp.empty((rows, self.units), self.dtype) if self.activation.needs_z else self._a
        self._dx = xp.empty((rows, fan_in), self.dtype)
        self._ones = xp.ones(rows, self.dtype)
        self._capacity = rows
        self._view_rows = -1  # the cached views were of the old buffers: _views makes new ones

    def _views(self, rows: int) -> tuple[Any, Any, Any, Any]:
        """(z, a, dx, ones) for `rows` rows, kept while the batch size stays: every batch but an
        epoch's last one reuses them (slicing four buffers twice a step was a measurable part
        of a small layer's time). Every reallocation drops them (_ensure_capacity)."""
        if rows != self._view_rows:
            self._ensure_capacity(rows)
            z = self._z[:rows]
            a = z if self._z is self._a else self._a[:rows]  # in place: one view, so the activation sees it
            self._view, self._view_rows = (z, a, self._dx[:rows], self._ones[:rows]), rows
        return self._view

    def forward(self, x: Any, training: bool) -> Any:
        """x (N, *in_shape) -> (N, *in_shape[:-1], units)."""
        n = x.shape[0]
        rows = n * self._rows_per_sample
        z, a, _, _ = self._views(rows)
        x2 = x if x.ndim == 2 else x.reshape(rows, x.shape[-1])
        self.xp.matmul(x2, self._weight_t, out=z)
        self.activation.forward_biased(z, self.bias, out=a, fused=training)  # predict: no Numba
        self._x, self._zv, self._av, self._n = x2, z, a, n
        return a if x.ndim == 2 else a.reshape(n, *self.out_shape)

    def backward(self, grad_out: Any, need_input_grad: bool = True) -> Any:
        rows = self._x.shape[0]
        _, _, dx, ones = self._views(rows)
        g = grad_out if grad_out.ndim == 2 else grad_out.reshape(rows, self.units)
        dz = self.activation.backward_bias(g, self._zv if self.activation.needs_z else None, self._av, g,
                                           self.grad_bias, ones)
        self.xp.matmul(dz.T, self._x, out=self.grad_weight)
        if not need_input_grad:
            return None
        self.xp.matmul(dz, self.weight, out=dx)
        return dx if len(self.input_shape) == 1 else dx.reshape(self._n, *self.input_shape)
