"""The layer parts of the network spec (CONTRACT §3), one pydantic model per layer type, and
the strict base and integer types that every part of the spec (worker/engine/spec.py) uses."""
from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from worker.engine.activations import ACTIVATIONS

Activation = Literal[ACTIVATIONS]  # type: ignore[valid-type]
PosInt = Annotated[int, Field(gt=0, strict=True)]
NonNegInt = Annotated[int, Field(ge=0, strict=True)]


def _to_pair(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        return [value, value]
    return value


# The schema shows what a request may hold: one int (for both sides) or an [h, w] pair.
_PosPair = Annotated[list[PosInt], Field(min_length=2, max_length=2)]
_NonNegPair = Annotated[list[NonNegInt], Field(min_length=2, max_length=2)]
Pair = Annotated[_PosPair, BeforeValidator(_to_pair, json_schema_input_type=PosInt | _PosPair)]
NonNegPair = Annotated[_NonNegPair, BeforeValidator(_to_pair, json_schema_input_type=NonNegInt | _NonNegPair)]


def _valid_padding(value: Any) -> Any:
    return [0, 0] if value == "valid" else value


class StrictPart(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class DenseSpec(StrictPart):
    """nn.Linear; `units` may be left out on the last dense layer only (then: classes or target columns)."""

    type: Literal["dense"]
    units: PosInt | None = None
    activation: Activation = "linear"


class Conv2dSpec(StrictPart):
    """nn.Conv2d on NCHW input; sizes are an int or [h, w]; padding also "same" (stride 1) or "valid"."""

    type: Literal["conv2d"]
    filters: PosInt
    kernel_size: Pair
    stride: Pair = [1, 1]
    padding: Annotated[Literal["same"] | NonNegPair, BeforeValidator(
        _valid_padding, json_schema_input_type=Literal["same", "valid"] | NonNegInt | _NonNegPair)] = [0, 0]
    activation: Activation = "linear"

    @model_validator(mode="after")
    def _same_needs_stride_one(self) -> Conv2dSpec:
        if self.padding == "same" and self.stride != [1, 1]:
            raise ValueError("padding 'same' needs stride 1 (as in PyTorch)")
        return self


class Pool2dSpec(StrictPart):
    """nn.MaxPool2d / nn.AvgPool2d; `stride` defaults to `pool_size`."""

    type: Literal["maxpool2d", "avgpool2d"]
    pool_size: Pair
    stride: Pair | None = None

    @model_validator(mode="after")
    def _default_stride(self) -> Pool2dSpec:
        if self.stride is None:
            self.stride = list(self.pool_size)
        return self


class FlattenSpec(StrictPart):
    """nn.Flatten (C order)."""

    type: Literal["flatten"]


class RecurrentSpec(StrictPart):
    """nn.RNN (tanh) / nn.LSTM / nn.GRU, batch_first, one layer; without return_sequences the last step goes on."""

    type: Literal["rnn", "lstm", "gru"]
    units: PosInt
    return_sequences: bool = False


class BatchNormSpec(StrictPart):
    """nn.BatchNorm1d / nn.BatchNorm2d by input rank (PyTorch's momentum convention)."""

    type: Literal["batchnorm"]
    momentum: float = Field(0.1, ge=0.0, le=1.0)
    eps: float = Field(1e-5, gt=0.0)


class DropoutSpec(StrictPart):
    """Inverted dropout with drop probability `rate`; off at prediction."""

    type: Literal["dropout"]
    rate: float = Field(ge=0.0, lt=1.0)


LAYER_SPECS: dict[str, type[StrictPart]] = {
    "dense": DenseSpec, "conv2d": Conv2dSpec, "maxpool2d": Pool2dSpec, "avgpool2d": Pool2dSpec,
    "flatten": FlattenSpec, "rnn": RecurrentSpec, "lstm": RecurrentSpec, "gru": RecurrentSpec,
    "batchnorm": BatchNormSpec, "dropout": DropoutSpec,
}
