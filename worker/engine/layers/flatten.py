"""flatten: (N, *shape) -> (N, prod(shape)) in C order, as nn.Flatten."""
from __future__ import annotations

import math
from typing import Any

from worker.engine.layers import Layer, register


@register
class Flatten(Layer):
    kind = "flatten"

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        return (math.prod(input_shape),)

    def forward(self, x: Any, training: bool) -> Any:
        self._x_shape = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, grad_out: Any, need_input_grad: bool = True) -> Any:
        return grad_out.reshape(self._x_shape)
