"""Spec validation: defaults, normalisation, every problem listed, never another exception."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.engine import SpecError, SpecLimits, task_for_loss, validate_spec

BASE = {"layers": [{"type": "dense", "units": 64, "activation": "relu"}, {"type": "dropout", "rate": 0.2},
                   {"type": "dense", "activation": "softmax"}]}


def _errors(raw, **kwargs) -> list[dict]:
    with pytest.raises(SpecError) as info:
        validate_spec(raw, **kwargs)
    return info.value.errors


def test_defaults_are_filled_in():
    spec = validate_spec(BASE, input_shape=(10,), n_outputs=3)
    assert spec["loss"] == "cross_entropy"
    assert spec["optimizer"] == {"type": "adam", "learning_rate": 0.001, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8}
    assert spec["layers"][2]["units"] == 3
    assert (spec["epochs"], spec["batch_size"], spec["shuffle"], spec["dtype"], spec["device"]) == (
        10, 32, True, "float32", "auto")
    assert validate_spec(spec) == spec  # idempotent


def test_conv_pool_recurrent_fields_are_normalised():
    spec = validate_spec({"layers": [
        {"type": "conv2d", "filters": 4, "kernel_size": 3, "padding": "same"},
        {"type": "conv2d", "filters": 4, "kernel_size": [3, 1], "stride": 2, "padding": "valid"},
        {"type": "maxpool2d", "pool_size": 2}, {"type": "avgpool2d", "pool_size": [2, 1], "stride": 1},
        {"type": "flatten"}, {"type": "gru", "units": 5}, {"type": "batchnorm"},
        {"type": "dense", "units": 1}], "loss": "mse"})
    conv1, conv2, maxpool, avgpool, _, gru, bn, _ = spec["layers"]
    assert conv1 == {"type": "conv2d", "filters": 4, "kernel_size": [3, 3], "stride": [1, 1], "padding": "same",
                     "activation": "linear"}
    assert (conv2["kernel_size"], conv2["stride"], conv2["padding"]) == ([3, 1], [2, 2], [0, 0])
    assert maxpool["stride"] == [2, 2] and avgpool["stride"] == [1, 1]
    assert gru == {"type": "gru", "units": 5, "return_sequences": False}
    assert bn == {"type": "batchnorm", "momentum": 0.1, "eps": 1e-5}


def test_every_problem_is_listed_with_its_location():
    raw = {"layers": [{"type": "dense", "units": -3, "activation": "softmax"}, {"type": "dropout", "rate": 1.5},
                      {"type": "dense", "units": 4, "activation": "relu", "extra": 1}, {"type": "warp"}],
           "loss": "cross_entropy", "epochs": 0, "optimizer": {"type": "sgd", "learning_rate": -1}}
    locs = {tuple(e["loc"]) for e in _errors(raw)}
    assert {("spec", "layers", 0, "units"), ("spec", "layers", 1, "rate"), ("spec", "layers", 2, "extra"),
            ("spec", "layers", 3, "type"), ("spec", "epochs"), ("spec", "optimizer", "learning_rate")} <= locs


def test_cross_layer_rules():
    softmax_inside = {"layers": [{"type": "dense", "units": 3, "activation": "softmax"},
                                 {"type": "dense", "units": 2, "activation": "softmax"}]}
    assert ["spec", "layers", 0, "activation"] in [e["loc"] for e in _errors(softmax_inside)]
    mismatch = {**BASE, "loss": "binary_cross_entropy"}
    assert any("sigmoid" in e["msg"] for e in _errors(mismatch))
    no_val = {**BASE, "early_stopping": {"monitor": "val_loss"}}
    assert any("validation_split" in e["msg"] for e in _errors(no_val))
    wrong_units = _errors({**BASE, "layers": [*BASE["layers"][:2], {"type": "dense", "units": 4,
                                                                    "activation": "softmax"}]}, n_outputs=3)
    assert wrong_units[0]["loc"] == ["spec", "layers", 2, "units"]


def test_limits_and_shapes():
    errors = _errors({**BASE, "epochs": 50, "batch_size": 500}, input_shape=(10_000,), n_outputs=3,
                     limits=SpecLimits(max_params=100_000, max_epochs=20, max_batch_size=256))
    msgs = " ".join(e["msg"] for e in errors)
    assert "max_params=100000" in msgs and "max_epochs=20" in msgs and "max_batch_size=256" in msgs
    image = {"layers": [{"type": "batchnorm"}, {"type": "dense", "units": 2}], "loss": "mse"}
    assert any("1-D" in e["msg"] for e in _errors(image, input_shape=(3, 4, 5)))
    assert any("input shape" in e["msg"] for e in _errors(image, input_shape=(1, 2, 3, 4, 5)))


def test_task_for_loss():
    assert task_for_loss("cross_entropy") == task_for_loss("binary_cross_entropy") == "classification"
    assert task_for_loss("mse") == task_for_loss("huber") == "regression"


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                    max_leaves=20)
LAYER = st.fixed_dictionaries({"type": st.sampled_from(["dense", "conv2d", "maxpool2d", "flatten", "lstm", "batchnorm",
                                                        "dropout", "bogus"])},
                              optional={"units": JSON, "activation": JSON, "rate": JSON, "kernel_size": JSON,
                                        "filters": JSON, "pool_size": JSON, "padding": JSON})
SPECS = st.fixed_dictionaries({"layers": st.lists(LAYER, max_size=4) | JSON},
                              optional={"loss": JSON, "optimizer": JSON, "epochs": JSON, "lr_schedule": JSON,
                                        "early_stopping": JSON, "validation_split": JSON})


@settings(max_examples=300, deadline=None)
@given(raw=JSON | SPECS, shape=st.none() | st.lists(st.integers(-2, 12), max_size=4) | JSON,
       n_outputs=st.none() | st.integers(-1, 5))
def test_never_raises_anything_but_spec_error(raw, shape, n_outputs):
    try:
        spec = validate_spec(raw, input_shape=shape, n_outputs=n_outputs)
    except SpecError as exc:
        assert exc.errors and all(e["loc"] and isinstance(e["msg"], str) for e in exc.errors)
    else:
        assert isinstance(spec, dict) and spec["layers"]
