"""Inverted dropout: in training, zero each input with probability `rate` and scale the rest by
1 / (1 - rate); at prediction the identity. The mask comes from `self.rng` (an xp Generator),
which the network reseeds every epoch so that a resumed run draws the same masks."""
from __future__ import annotations

from typing import Any

from worker.engine.layers import register
from worker.engine.layers.base import BuildContext, Layer


@register
class Dropout(Layer):
    kind = "dropout"

    def __init__(self, config: dict[str, Any], index: int) -> None:
        super().__init__(config, index)
        self.rate = float(config.get("rate", 0.0))
        self.mask: Any = None

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(input_shape)

    def build(self, input_shape: tuple[int, ...], ctx: BuildContext) -> tuple[int, ...]:
        self.rng = ctx.rng
        self._uniform: Any = None
        return super().build(input_shape, ctx)

    def forward(self, x: Any, training: bool) -> Any:
        self._active = training and self.rate > 0
        if not self._active:
            return x
        xp = self.xp
        if self._uniform is None or self._uniform.shape[0] < x.shape[0]:
            self._uniform = xp.empty(x.shape, self.dtype)
            self._mask_buf = xp.empty(x.shape, self.dtype)
            self._out = xp.empty(x.shape, self.dtype)
        n = x.shape[0]
        u, mask, out = self._uniform[:n], self._mask_buf[:n], self._out[:n]
        self.rng.random(out=u, dtype=self.dtype)
        xp.greater_equal(u, self.rate, out=mask)  # bool -> 0/1 in the float buffer
        mask *= 1.0 / (1.0 - self.rate)
        self.mask = mask
        return xp.multiply(x, mask, out=out)

    def backward(self, grad_out: Any, need_input_grad: bool = True) -> Any:
        if not self._active:
            return grad_out
        return self.xp.multiply(grad_out, self.mask, out=grad_out)
