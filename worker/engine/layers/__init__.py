"""Layer registry: spec `type` -> Layer class. Each module registers its classes on import."""
from __future__ import annotations

from worker.engine.layers.base import BuildContext, Layer, ShapeError

LAYER_TYPES: dict[str, type[Layer]] = {}


def register(cls: type[Layer]) -> type[Layer]:
    LAYER_TYPES[cls.kind] = cls
    return cls


def layer_class(kind: str) -> type[Layer]:
    try:
        return LAYER_TYPES[kind]
    except KeyError:
        raise ShapeError(f"unknown layer type {kind!r}; known: {sorted(LAYER_TYPES)}") from None


# Imported last: these modules use `register` above.
from worker.engine.layers import (  # noqa: E402, F401
    batchnorm,
    conv,
    dense,
    dropout,
    flatten,
    gated,
    pooling,
    recurrent,
)

__all__ = ["LAYER_TYPES", "BuildContext", "Layer", "ShapeError", "layer_class", "register"]
