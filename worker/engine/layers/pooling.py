"""maxpool2d and avgpool2d: PyTorch semantics (no padding, floor mode), by strided slices.

Each of the ph*pw window offsets is one strided view of the input; the pooled value is an
elementwise reduction over those views, so no window tensor is ever materialised. Max pooling in
training on NumPy runs cpu_conv's kernels instead: one pass that keeps each window's argmax, and
one scatter of the gradient to it, on the parts of the batch at once when the thread budget
allows and the input is large enough (batch_split.parts_for).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from worker.engine.layers import Layer, register
from worker.engine.layers.base import ShapeError
from worker.engine.layers.im2col import offsets, pair, window_count


class _Pool2D(Layer):
    """config: pool_size, stride=pool_size."""

    def __init__(self, config: dict[str, Any], index: int) -> None:
        super().__init__(config, index)
        where = f"layer {index} ({self.kind})"
        self.pool = pair(config["pool_size"], f"{where} pool_size")
        stride = config.get("stride")
        self.stride = self.pool if stride is None else pair(stride, f"{where} stride")

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        where = f"layer {self.index} ({self.kind})"
        if len(input_shape) != 3:
            raise ShapeError(f"{where} needs (channels, height, width) input, got shape "
                             f"{list(input_shape)}")
        if min(self.pool) < 1 or min(self.stride) < 1:
            raise ShapeError(f"{where}: pool_size and stride must be positive")
        c, h, w = input_shape
        ho = window_count(h, self.pool[0], self.stride[0])
        wo = window_count(w, self.pool[1], self.stride[1])
        if ho < 1 or wo < 1:
            raise ShapeError(f"{where}: pooling {self.pool[0]}x{self.pool[1]} over a {h}x{w} "
                             f"input gives zero size")
        return c, ho, wo

    def _windows(self):
        """(row slice, col slice) of every window offset, in PyTorch's scan order."""
        _, ho, wo = self.out_shape
        for _, _, rows, cols in offsets(*self.pool, *self.stride, ho, wo):
            yield rows, cols

    def _overlapping(self) -> bool:
        return self.stride[0] < self.pool[0] or self.stride[1] < self.pool[1]

    def _scatter(self, dx: Any, rows: slice, cols: slice, share: Any) -> None:
        if self._overlapping():
            dx[:, :, rows, cols] += share
        else:  # disjoint windows: plain assignment, no read of dx
            dx[:, :, rows, cols] = share


@register
class MaxPool2D(_Pool2D):
    kind = "maxpool2d"
    use_kernels = True  # training on NumPy runs cpu_conv's kernels (tests turn it off for the reference)

    def forward(self, x: Any, training: bool) -> Any:
        """x (N, C, H, W) -> (N, C, Ho, Wo): the max over each window."""
        self._kernels = training and self.xp is np and self.use_kernels
        if self._kernels:
            return self._forward_kernels(x)
        windows = iter(self._windows())
        rows, cols = next(windows)
        out = x[:, :, rows, cols].copy()
        for rows, cols in windows:
            self.xp.maximum(out, x[:, :, rows, cols], out=out)
        self._x, self._out = x, out
        return out

    def backward(self, grad_out: Any, need_input_grad: bool = True) -> Any:
        """The gradient goes to the first maximum of each window (PyTorch's tie rule)."""
        if self._kernels:
            return self._backward_kernels(grad_out)
        xp, x, out = self.xp, self._x, self._out
        dx = xp.zeros_like(x)
        is_max = xp.empty(out.shape, dtype=bool)
        unclaimed = xp.empty(out.shape, dtype=bool)
        windows = list(self._windows())
        share = None if not self._overlapping() else xp.empty_like(out)
        for k, (rows, cols) in enumerate(windows):
            xp.equal(x[:, :, rows, cols], out, out=is_max)
            if k:
                is_max &= unclaimed
            if share is None:  # disjoint windows: write straight into dx
                xp.multiply(grad_out, is_max, out=dx[:, :, rows, cols])
            else:
                xp.multiply(grad_out, is_max, out=share)
                dx[:, :, rows, cols] += share
            if k == 0:
                xp.logical_not(is_max, out=unclaimed)
            elif k < len(windows) - 1:
                unclaimed ^= is_max  # is_max only holds unclaimed windows
        return dx


    def _forward_kernels(self, x: np.ndarray) -> np.ndarray:
        from worker.engine import batch_split, cpu_conv  # noqa: PLC0415  (Numba: only where training runs)

        n = x.shape[0]
        index = np.int32 if x.shape[2] * x.shape[3] < 2**31 else np.int64  # int32: the 2x2 kernel vectorizes
        out, arg = self.scratch("out", (n, *self.out_shape)), self.scratch("arg", (n, *self.out_shape), index)
        self._x_shape, self._arg = x.shape, arg
        self._parts = batch_split.parts_for(n, x.size)
        batch_split.run(n, lambda lo, hi, _: cpu_conv.maxpool(x[lo:hi], self.pool, self.stride, out[lo:hi],
                                                              arg[lo:hi]), self._parts)
        return out

    def _backward_kernels(self, grad_out: np.ndarray) -> np.ndarray:
        from worker.engine import batch_split, cpu_conv  # noqa: PLC0415

        dx, arg = self.scratch("dx", self._x_shape), self._arg
        batch_split.run(dx.shape[0], lambda lo, hi, _: cpu_conv.maxpool_backward(
            grad_out[lo:hi], arg[lo:hi], self.pool, self.stride, dx[lo:hi]), self._parts)
        return dx


@register
class AvgPool2D(_Pool2D):
    kind = "avgpool2d"

    def forward(self, x: Any, training: bool) -> Any:
        """x (N, C, H, W) -> (N, C, Ho, Wo): the mean over each window."""
        windows = iter(self._windows())
        rows, cols = next(windows)
        out = x[:, :, rows, cols].copy()
        for rows, cols in windows:
            out += x[:, :, rows, cols]
        out *= 1.0 / (self.pool[0] * self.pool[1])
        self._x_shape, self._x_dtype = x.shape, x.dtype
        return out

    def backward(self, grad_out: Any, need_input_grad: bool = True) -> Any:
        share = grad_out * (1.0 / (self.pool[0] * self.pool[1]))
        dx = self.xp.zeros(self._x_shape, dtype=self._x_dtype)
        for rows, cols in self._windows():
            self._scatter(dx, rows, cols, share)
        return dx
