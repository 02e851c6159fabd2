"""The protocol every spec layer follows.

Shapes are per sample, without the batch dimension: `(F,)` for dense data, `(C, H, W)` for
images (NCHW, as PyTorch), `(T, F)` for sequences (batch_first). Arrays on the training path
have a leading batch dimension N.

Lifecycle:
    layer = LayerClass(config, index)      # config: the normalised spec dict of this layer
    out_shape = layer.output_shape(in_shape)  # pure: raises ShapeError, allocates nothing
    layer.build(in_shape, ctx)             # allocates params (host init, then ctx.xp)
    y = layer.forward(x, training)         # keeps what backward needs
    dx = layer.backward(dy, need_input_grad)  # fills self.grads (overwrites), returns dL/dx

Parameter names are PyTorch's state_dict names: spec layer i owns "{i}.weight", "{i}.bias"
(dense (out, in); conv2d (out, in, kh, kw); batchnorm (C,)), recurrent layers
"{i}.weight_ih_l0", "{i}.weight_hh_l0", "{i}.bias_ih_l0", "{i}.bias_hh_l0".
Non-trainable state (batchnorm running statistics) lives in `self.buffers` with the same
naming ("{i}.running_mean", "{i}.running_var") and is saved with the parameters.
"""
from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Any, ClassVar

import numpy as np


class ShapeError(ValueError):
    """A layer cannot take the shape it is given; the message says why, for a 422."""


@dataclass
class BuildContext:
    xp: ModuleType  # numpy or cupy: every array on the training path comes from here
    dtype: Any  # np.float32 or np.float64: params, buffers and constants all use it
    init_rng: np.random.Generator  # host RNG for initialisation: same seed, same weights on any device
    rng: Any  # xp-side Generator for dropout masks (xp.random.default_rng(seed))


class Layer:
    kind: ClassVar[str] = ""
    # Whether this layer's "weight"-like params get the spec's l2 penalty (biases never do).
    l2_param_suffixes: ClassVar[tuple[str, ...]] = ("weight",)

    def __init__(self, config: dict[str, Any], index: int) -> None:
        self.config = config
        self.index = index
        self.params: dict[str, Any] = {}
        self.grads: dict[str, Any] = {}
        self.buffers: dict[str, Any] = {}
        self.input_shape: tuple[int, ...] | None = None
        self.out_shape: tuple[int, ...] | None = None

    def name(self, suffix: str) -> str:
        return f"{self.index}.{suffix}"

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        raise NotImplementedError

    def build(self, input_shape: tuple[int, ...], ctx: BuildContext) -> tuple[int, ...]:
        self.input_shape = tuple(input_shape)
        self.out_shape = self.output_shape(self.input_shape)
        self.xp, self.dtype = ctx.xp, ctx.dtype
        return self.out_shape

    def bind_params(self) -> None:
        """Called after the network replaced `params`/`grads` entries with views into its flat
        buffers (same shapes and values); a layer that caches those arrays refreshes them here.
        A layer may still replace `grads` entries in backward: the network copies them back."""

    def forward(self, x: Any, training: bool) -> Any:
        raise NotImplementedError

    def backward(self, grad_out: Any, need_input_grad: bool = True) -> Any:
        raise NotImplementedError

    def scratch(self, key: str, shape: tuple[int, ...], dtype: Any = None) -> Any:
        """A work array of this layer reused across batches of the same shape (contents
        undefined), allocated with the layer's xp and dtype unless `dtype` says otherwise."""
        buffers = self.__dict__.setdefault("_scratch", {})
        buf = buffers.get(key)
        if buf is None or buf.shape != tuple(shape):
            buf = buffers[key] = self.xp.empty(shape, dtype=self.dtype if dtype is None else dtype)
        return buf

    def n_params(self, input_shape: tuple[int, ...]) -> int:
        """Trainable parameter count for `input_shape`, without allocating (service limits)."""
        return 0

    def l2_names(self) -> list[str]:
        return [n for n in self.params if n.rsplit(".", 1)[1].startswith(self.l2_param_suffixes)]
