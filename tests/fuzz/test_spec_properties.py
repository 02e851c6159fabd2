"""Property tests of worker.engine.spec.validate_spec: for arbitrary JSON, and for valid specs
with any one field (at any depth) replaced by junk, it returns a normalised spec or raises
SpecError whose errors each name a location and a message — never any other exception."""
from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from worker.engine.spec import SpecError, SpecLimits, validate_spec

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
LIMITS = SpecLimits(max_params=200_000, max_epochs=1000, max_batch_size=4096)

SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(-10**40, 10**40),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8),
    st.sampled_from(["dense", "conv2d", "lstm", "gru", "rnn", "softmax", "same", "adam", "sgd", "mse",
                     "cross_entropy", "step", "plateau", "gpu", "float64", "val_loss", "", "\x00", "1e999"]),
)
JSON = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)), max_leaves=20)

VALID_SPECS = [
    {"layers": [{"type": "dense", "units": 8, "activation": "relu"}, {"type": "dropout", "rate": 0.2},
                {"type": "dense", "activation": "softmax"}],
     "loss": "cross_entropy", "optimizer": {"type": "adam", "learning_rate": 0.001}, "epochs": 3, "batch_size": 8,
     "validation_split": 0.2, "early_stopping": {"monitor": "val_loss", "patience": 2},
     "lr_schedule": {"type": "step", "step_size": 2, "gamma": 0.5}, "gradient_clip_norm": 1.0},
    {"layers": [{"type": "conv2d", "filters": 4, "kernel_size": 3, "padding": "same", "activation": "relu"},
                {"type": "maxpool2d", "pool_size": 2}, {"type": "batchnorm"}, {"type": "flatten"},
                {"type": "dense", "units": 3}],
     "loss": "mse", "optimizer": {"type": "sgd", "learning_rate": 0.1, "momentum": 0.9, "nesterov": True}},
    {"layers": [{"type": "lstm", "units": 5, "return_sequences": True}, {"type": "gru", "units": 4},
                {"type": "dense", "units": 1, "activation": "sigmoid"}],
     "loss": "binary_cross_entropy", "optimizer": "rmsprop", "lr_schedule": {"type": "plateau", "factor": 0.5,
                                                                              "patience": 1}},
]
SHAPES = [(6,), (1, 8, 8), (4, 3)]
N_OUTPUTS = [3, 3, 1]
NEAR_VALID = st.one_of(st.integers(0, 10), st.floats(0, 1), st.booleans(), JSON)


def validate_or_spec_error(raw: Any, input_shape: tuple[int, ...] | None, n_outputs: int | None) -> None:
    try:
        spec = validate_spec(raw, input_shape=input_shape, n_outputs=n_outputs, limits=LIMITS)
    except SpecError as exc:
        assert exc.errors, "a SpecError must list at least one problem"
        for error in exc.errors:
            assert isinstance(error["loc"], list) and isinstance(error["msg"], str) and error["msg"]
        json.dumps(exc.errors)  # goes out in a 422 body as is
        event("SpecError")
        return
    event("valid")
    assert isinstance(spec, dict) and spec["layers"]
    json.dumps(spec, allow_nan=False)  # stored and answered as JSON: finite numbers only


@FUZZ
@given(raw=JSON, shape=st.sampled_from([None, *SHAPES]), n_outputs=st.sampled_from([None, 1, 3]))
def test_arbitrary_json_is_a_spec_or_a_spec_error(raw: Any, shape, n_outputs) -> None:  # noqa: ANN001
    validate_or_spec_error(raw, shape, n_outputs)


@FUZZ
@given(raw=st.dictionaries(st.sampled_from(["layers", "loss", "optimizer", "epochs", "batch_size", "seed",
                                            "early_stopping", "lr_schedule", "dtype", "device"]), JSON))
def test_arbitrary_top_level_fields_are_a_spec_or_a_spec_error(raw: dict[str, Any]) -> None:
    validate_or_spec_error(raw, (6,), 3)


def _paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path to a dict value or list item inside `value`."""
    found = []
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else []
    for key, child in items:
        found.append((*prefix, key))
        found.extend(_paths(child, (*prefix, key)))
    return found


def _replaced(spec: Any, path: tuple, junk: Any) -> Any:
    copy = json.loads(json.dumps(spec))
    target = copy
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = junk
    return copy


@FUZZ
@given(which=st.integers(0, len(VALID_SPECS) - 1), data=st.data(), junk=NEAR_VALID)
def test_a_valid_spec_with_one_field_replaced_by_junk(which: int, data, junk: Any) -> None:  # noqa: ANN001
    spec, shape = VALID_SPECS[which], SHAPES[which]
    path = data.draw(st.sampled_from(_paths(spec)))
    validate_or_spec_error(_replaced(spec, path, junk), shape, N_OUTPUTS[which])


def test_the_valid_specs_are_valid() -> None:
    for spec, shape, n_outputs in zip(VALID_SPECS, SHAPES, N_OUTPUTS, strict=True):
        assert validate_spec(spec, input_shape=shape, n_outputs=n_outputs, limits=LIMITS)["layers"]


def published_schema_accepts(raw: Any) -> bool:
    """The spec's JSON Schema as /openapi.json publishes it (NetworkSpec, validation mode)."""
    import jsonschema

    from worker.engine.spec import NetworkSpec

    return jsonschema.Draft202012Validator(NetworkSpec.model_json_schema()).is_valid(raw)


@FUZZ
@given(which=st.integers(0, len(VALID_SPECS) - 1), data=st.data(), junk=NEAR_VALID)
def test_the_published_schema_accepts_every_spec_the_validator_accepts(which: int, data, junk: Any) -> None:  # noqa: ANN001
    """A generated client or an editor checking against the schema never refuses a spec the
    service takes (the validator adds only rules across fields, shapes and limits)."""
    raw = _replaced(VALID_SPECS[which], data.draw(st.sampled_from(_paths(VALID_SPECS[which]))), junk)
    try:
        validate_spec(raw, limits=LIMITS)
    except SpecError:
        event("refused by the validator")
        return
    assert published_schema_accepts(raw), raw
    event("accepted by both")
