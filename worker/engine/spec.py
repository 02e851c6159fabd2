"""The network spec of CONTRACT §3: pydantic models, defaults (PyTorch's), and whole-spec checks.

    spec = validate_spec(raw, input_shape=(64,), n_outputs=10, limits=SpecLimits())

returns the normalised spec (a plain JSON-able dict, every default filled in) or raises
SpecError whose `.errors` lists EVERY problem as {"loc": ["spec", ...], "msg": ...}. It never
raises anything else, whatever JSON it is given.

Normalisation: conv `kernel_size`/`stride`/`padding` become [h, w] (padding may stay "same";
"valid" becomes [0, 0]); pool `pool_size` becomes [h, w] and `stride` defaults to it; an
optimizer given as a bare string becomes {"type": name}; a missing `loss` is derived from the
last activation (softmax -> cross_entropy, sigmoid -> binary_cross_entropy, else mse); the
plateau schedule monitors val_loss when there is a validation split, else loss.
`n_outputs` is the number of output units the data needs (classes for cross_entropy, target
columns otherwise; 2 classes with binary_cross_entropy count as 1 unit).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, ValidationError, model_validator

from worker.engine.spec_layers import (  # noqa: F401  (Activation, Pair, NonNegPair: re-exported, public here too)
    LAYER_SPECS,
    Activation,
    BatchNormSpec,
    Conv2dSpec,
    DenseSpec,
    DropoutSpec,
    FlattenSpec,
    NonNegInt,
    NonNegPair,
    Pair,
    Pool2dSpec,
    PosInt,
    RecurrentSpec,
    StrictPart,
)

LR = Annotated[float, Field(gt=0.0)]


class SGDSpec(StrictPart):
    """torch.optim.SGD."""

    type: Literal["sgd"]
    learning_rate: LR = 0.001
    momentum: float = Field(0.0, ge=0.0)
    nesterov: bool = False

    @model_validator(mode="after")
    def _nesterov_needs_momentum(self) -> SGDSpec:
        if self.nesterov and self.momentum <= 0:
            raise ValueError("nesterov needs a momentum above 0 (as in PyTorch)")
        return self


class AdamSpec(StrictPart):
    """torch.optim.Adam."""

    type: Literal["adam"]
    learning_rate: LR = 0.001
    beta1: float = Field(0.9, ge=0.0, lt=1.0)
    beta2: float = Field(0.999, ge=0.0, lt=1.0)
    eps: float = Field(1e-8, gt=0.0)


class AdamWSpec(AdamSpec):
    """torch.optim.AdamW (decoupled weight decay)."""

    type: Literal["adamw"]  # type: ignore[assignment]
    weight_decay: float = Field(0.01, ge=0.0)


class RMSpropSpec(StrictPart):
    """torch.optim.RMSprop (`rho` is PyTorch's `alpha`)."""

    type: Literal["rmsprop"]
    learning_rate: LR = 0.01
    rho: float = Field(0.9, ge=0.0, lt=1.0)
    eps: float = Field(1e-8, gt=0.0)


class AdagradSpec(StrictPart):
    """torch.optim.Adagrad."""

    type: Literal["adagrad"]
    learning_rate: LR = 0.01
    eps: float = Field(1e-10, gt=0.0)


OPTIMIZER_SPECS: dict[str, type[StrictPart]] = {
    "sgd": SGDSpec, "adam": AdamSpec, "adamw": AdamWSpec, "rmsprop": RMSpropSpec, "adagrad": AdagradSpec,
}


class StepLRSpec(StrictPart):
    """StepLR: the learning rate times `gamma` every `step_size` epochs."""

    type: Literal["step"]
    step_size: PosInt
    gamma: float = Field(0.1, gt=0.0)


class ExponentialLRSpec(StrictPart):
    """ExponentialLR: the learning rate times `gamma` every epoch."""

    type: Literal["exponential"]
    gamma: float = Field(gt=0.0)


class CosineLRSpec(StrictPart):
    """CosineAnnealingLR over `t_max` epochs down to `eta_min`."""

    type: Literal["cosine"]
    t_max: PosInt
    eta_min: float = Field(0.0, ge=0.0)


class PlateauLRSpec(StrictPart):
    """ReduceLROnPlateau; `monitor` null means val_loss with a validation split, else loss."""

    type: Literal["plateau"]
    factor: float = Field(0.1, gt=0.0, lt=1.0)
    patience: NonNegInt = 10
    threshold: float = Field(1e-4, ge=0.0)
    min_lr: float = Field(0.0, ge=0.0)
    monitor: Literal["loss", "val_loss"] | None = None


SCHEDULE_SPECS: dict[str, type[StrictPart]] = {
    "step": StepLRSpec, "exponential": ExponentialLRSpec, "cosine": CosineLRSpec, "plateau": PlateauLRSpec,
}


class EarlyStoppingSpec(StrictPart):
    """Stop when `monitor` has not improved by `min_delta` for `patience` epochs."""

    monitor: Literal["loss", "val_loss", "accuracy", "val_accuracy"] = "val_loss"
    patience: NonNegInt = 5
    min_delta: float = Field(0.0, ge=0.0)
    restore_best: bool = True


LOSSES = ("mse", "mae", "huber", "cross_entropy", "binary_cross_entropy")


class TopSpec(StrictPart):
    """Everything but the layers, optimizer and schedule, which are checked one by one."""

    layers: list[Any] = Field(min_length=1)
    loss: Literal[LOSSES] | None = None  # type: ignore[valid-type]
    optimizer: Any = None
    epochs: PosInt = 10
    batch_size: PosInt = 32
    shuffle: bool = True
    validation_split: float = Field(0.0, ge=0.0, lt=1.0)
    # Which rows validate: "shuffle" (seeded, stratified for classification) or "last" (Keras).
    validation: Literal["shuffle", "last"] = "shuffle"
    early_stopping: EarlyStoppingSpec | None = None
    l2: float = Field(0.0, ge=0.0)
    gradient_clip_norm: float | None = Field(None, gt=0.0)
    lr_schedule: Any = None
    seed: NonNegInt = 0
    dtype: Literal["float32", "float64"] = "float32"
    device: Literal["cpu", "gpu", "auto"] = "auto"
    # The job's running-time limit in seconds: enforced by the service's worker (capped by its
    # JOB_TIME_LIMIT_S), ignored by the engine itself.
    time_limit_s: float | None = Field(None, gt=0.0)


LayerSpec = Annotated[DenseSpec | Conv2dSpec | Pool2dSpec | FlattenSpec | RecurrentSpec | BatchNormSpec | DropoutSpec,
                      Field(discriminator="type")]
OptimizerSpec = Annotated[SGDSpec | AdamSpec | AdamWSpec | RMSpropSpec | AdagradSpec, Field(discriminator="type")]
ScheduleSpec = Annotated[StepLRSpec | ExponentialLRSpec | CosineLRSpec | PlateauLRSpec, Field(discriminator="type")]


class NetworkSpec(TopSpec):
    """The whole spec as one JSON schema (the `spec` of OpenAPI's JobCreate). Requests are
    validated part by part with these same models (`validate_spec`), which names every problem
    at once; a part given as a bare type name stands for `{"type": name}`."""

    layers: list[LayerSpec | Literal[tuple(LAYER_SPECS)]] = Field(min_length=1)  # type: ignore[valid-type]
    optimizer: OptimizerSpec | Literal[tuple(OPTIMIZER_SPECS)] | None = Field(  # type: ignore[valid-type]
        None, description="default: adam with its defaults")
    lr_schedule: ScheduleSpec | Literal[tuple(SCHEDULE_SPECS)] | None = None  # type: ignore[valid-type]


@dataclass
class SpecLimits:
    """Service limits; generous defaults. The service may pass its own."""

    max_params: int = 20_000_000
    max_epochs: int = 10_000
    max_batch_size: int = 65_536


class SpecError(ValueError):
    def __init__(self, errors: list[dict[str, Any]]) -> None:
        self.errors = errors
        super().__init__("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors))


def task_for_loss(loss: str) -> str:
    return "classification" if loss in ("cross_entropy", "binary_cross_entropy") else "regression"


def validate_spec(raw: Any, *, input_shape: tuple[int, ...] | None = None, n_outputs: int | None = None,
                  limits: SpecLimits | None = None) -> dict[str, Any]:
    """The normalised spec, or SpecError naming every problem (see the module docstring)."""
    from worker.engine import spec_checks  # noqa: PLC0415  (spec_checks imports this module)

    errors: list[dict[str, Any]] = []
    try:
        spec = spec_checks.normalise(raw, errors)
        if spec is not None:
            spec_checks.check_whole(spec, errors, input_shape, n_outputs, limits or SpecLimits())
    except SpecError:
        raise
    except Exception as exc:  # noqa: BLE001  (the promise: nothing but SpecError escapes)
        errors.append({"loc": ["spec"], "msg": f"invalid spec: {exc}"})
    if errors:
        raise SpecError(errors)
    return spec


def validate_part(model: type[BaseModel], raw: Any, loc: list[Any], errors: list[dict[str, Any]]) -> dict | None:
    """`model`-validated `raw` as a JSON dict, or None after appending its errors under `loc`."""
    try:
        return model.model_validate(raw).model_dump(mode="json")
    except ValidationError as exc:
        for err in exc.errors(include_url=False):
            msg = err["msg"].removeprefix("Value error, ")
            errors.append({"loc": [*loc, *err["loc"]], "msg": msg})
        return None
