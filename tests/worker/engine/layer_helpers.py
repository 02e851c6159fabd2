"""Drive one layer directly: build it in float64, take a sum-of-products loss, compare gradients.

loss = sum(layer(x) * R) for a fixed random R, so dL/dy = R and every gradient is exact to check.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from tests.worker.engine.gradcheck import assert_close, directional_grad, numeric_grad
from worker.engine.layers import BuildContext, layer_class


def build_layer(config: dict[str, Any], input_shape: tuple[int, ...], seed: int = 0,
                dtype: Any = np.float64, index: int = 0):
    layer = layer_class(config["type"])(config, index)
    ctx = BuildContext(xp=np, dtype=dtype, init_rng=np.random.default_rng(seed),
                       rng=np.random.default_rng(seed + 1))
    layer.build(tuple(input_shape), ctx)
    return layer


def check_layer_grads(layer, x: np.ndarray, seed: int = 1, max_elementwise: int = 400,
                      rtol: float = 1e-5) -> None:
    """Finite differences on x and every param: elementwise when small, else 3 random directions."""
    rng = np.random.default_rng(seed)
    upstream = rng.standard_normal((x.shape[0], *layer.out_shape))

    def loss() -> float:
        return float(np.sum(layer.forward(x, True) * upstream))

    layer.forward(x, True)
    dx = layer.backward(upstream.copy(), True)
    analytic = {"x": dx, **{name: g.copy() for name, g in layer.grads.items()}}
    arrays = {"x": x, **layer.params}
    assert set(layer.grads) == set(layer.params)
    for name, array in arrays.items():
        if array.size <= max_elementwise:
            assert_close(analytic[name], numeric_grad(loss, array), rtol=rtol, what=name)
            continue
        for _ in range(3):
            direction = rng.standard_normal(array.shape)
            numeric = directional_grad(loss, array, direction)
            assert_close(np.array(np.sum(analytic[name] * direction)), np.array(numeric),
                         rtol=rtol, what=f"{name} along a random direction")
