"""Whole-spec checks behind `spec.validate_spec`: per-part validation, then the rules that span
parts (softmax placement, loss/activation pairs, shapes through every layer, service limits)."""
from __future__ import annotations

from typing import Any

from worker.engine.spec import (
    LAYER_SPECS,
    OPTIMIZER_SPECS,
    SCHEDULE_SPECS,
    SpecLimits,
    TopSpec,
    validate_part,
)

Errors = list[dict[str, Any]]


def _typed_part(registry: dict, raw: Any, loc: list, errors: Errors, what: str) -> dict | None:
    if isinstance(raw, str):
        raw = {"type": raw}
    if not isinstance(raw, dict):
        errors.append({"loc": loc, "msg": f"{what} must be an object with a 'type'"})
        return None
    kind = raw.get("type")
    if not isinstance(kind, str) or kind not in registry:
        errors.append({"loc": [*loc, "type"], "msg": f"{what} type must be one of {sorted(registry)}, got {kind!r}"})
        return None
    return validate_part(registry[kind], raw, loc, errors)


def normalise(raw: Any, errors: Errors) -> dict | None:
    """Field-level validation of every part; the assembled spec when all parts are valid."""
    if not isinstance(raw, dict):
        errors.append({"loc": ["spec"], "msg": "the spec must be a JSON object"})
        return None
    top = validate_part(TopSpec, raw, ["spec"], errors)
    layers_raw = raw.get("layers")
    layers = []
    if isinstance(layers_raw, list):
        layers = [_typed_part(LAYER_SPECS, layer, ["spec", "layers", i], errors, "a layer")
                  for i, layer in enumerate(layers_raw)]
    given_optimizer = raw.get("optimizer")
    optimizer = _typed_part(OPTIMIZER_SPECS, "adam" if given_optimizer is None else given_optimizer,
                            ["spec", "optimizer"], errors, "the optimizer")
    schedule = None
    if raw.get("lr_schedule") is not None:
        schedule = _typed_part(SCHEDULE_SPECS, raw["lr_schedule"], ["spec", "lr_schedule"], errors,
                               "lr_schedule")
    if top is None or optimizer is None or any(layer is None for layer in layers) or (
            raw.get("lr_schedule") is not None and schedule is None):
        if top is not None and all(layer is not None for layer in layers):
            _check_layer_rules({**top, "layers": layers}, errors)
        return None
    spec = {**top, "layers": layers, "optimizer": optimizer, "lr_schedule": schedule}
    if spec["loss"] is None:
        last_act = layers[-1].get("activation")
        spec["loss"] = {"softmax": "cross_entropy", "sigmoid": "binary_cross_entropy"}.get(last_act, "mse")
    if schedule is not None and schedule["type"] == "plateau" and schedule["monitor"] is None:
        schedule["monitor"] = "val_loss" if spec["validation_split"] > 0 else "loss"
    return spec


def _check_layer_rules(spec: dict, errors: Errors) -> None:
    layers = spec["layers"]
    last = len(layers) - 1
    for i, layer in enumerate(layers):
        if layer.get("activation") == "softmax" and i != last:
            errors.append({"loc": ["spec", "layers", i, "activation"],
                           "msg": "softmax is only allowed on the last layer"})
    dense_idx = [i for i, layer in enumerate(layers) if layer["type"] == "dense"]
    for i in dense_idx[:-1]:
        if layers[i]["units"] is None:
            errors.append({"loc": ["spec", "layers", i, "units"],
                           "msg": "units is required (only the last dense layer may leave it out)"})
    last_act = layers[last].get("activation")
    loss = spec.get("loss")
    if loss == "cross_entropy" and last_act != "softmax":
        errors.append({"loc": ["spec", "layers", last, "activation"],
                       "msg": f"loss cross_entropy needs a softmax output layer, got {last_act or layers[last]['type']}"})
    if loss == "binary_cross_entropy" and last_act != "sigmoid":
        errors.append({"loc": ["spec", "layers", last, "activation"],
                       "msg": f"loss binary_cross_entropy needs a sigmoid output layer, got "
                              f"{last_act or layers[last]['type']}"})


def _output_units(loss: str, n_outputs: int) -> int:
    return 1 if loss == "binary_cross_entropy" and n_outputs == 2 else n_outputs


def check_whole(spec: dict, errors: Errors, input_shape: Any, n_outputs: int | None,
                limits: SpecLimits) -> None:
    """Cross-part rules; fills the last dense `units` from n_outputs. Appends to `errors`."""
    _check_layer_rules(spec, errors)
    es = spec["early_stopping"]
    if es is not None and es["monitor"].startswith("val_") and spec["validation_split"] == 0:
        errors.append({"loc": ["spec", "early_stopping", "monitor"],
                       "msg": f"early stopping monitors {es['monitor']} but validation_split is 0"})
    if es is not None and es["monitor"].endswith("accuracy") and spec["loss"] not in ("cross_entropy",
                                                                                     "binary_cross_entropy"):
        errors.append({"loc": ["spec", "early_stopping", "monitor"],
                       "msg": f"{es['monitor']} needs a classification loss, got {spec['loss']}"})
    if spec["epochs"] > limits.max_epochs:
        errors.append({"loc": ["spec", "epochs"], "msg": f"epochs {spec['epochs']} is over the limit max_epochs="
                                                         f"{limits.max_epochs}"})
    if spec["batch_size"] > limits.max_batch_size:
        errors.append({"loc": ["spec", "batch_size"], "msg": f"batch_size {spec['batch_size']} is over the limit "
                                                             f"max_batch_size={limits.max_batch_size}"})
    _fill_output_units(spec, errors, n_outputs)
    if input_shape is not None:
        _propagate_shapes(spec, errors, input_shape, limits)


def _fill_output_units(spec: dict, errors: Errors, n_outputs: int | None) -> None:
    dense_idx = [i for i, layer in enumerate(spec["layers"]) if layer["type"] == "dense"]
    if n_outputs is None:
        return
    if isinstance(n_outputs, bool) or not isinstance(n_outputs, int) or n_outputs < 1:
        errors.append({"loc": ["n_outputs"], "msg": f"the number of outputs must be a positive integer, got {n_outputs!r}"})
        return
    if not dense_idx:
        return
    want = _output_units(spec["loss"], int(n_outputs))
    layer = spec["layers"][dense_idx[-1]]
    if layer["units"] is None:
        layer["units"] = want
    elif dense_idx[-1] == len(spec["layers"]) - 1 and layer["units"] != want:
        errors.append({"loc": ["spec", "layers", dense_idx[-1], "units"],
                       "msg": f"the output layer has {layer['units']} units but the data needs {want} "
                              f"({'classes' if spec['loss'] == 'cross_entropy' else 'outputs'})"})


def _propagate_shapes(spec: dict, errors: Errors, input_shape: Any, limits: SpecLimits) -> None:
    from worker.engine.layers import layer_class  # noqa: PLC0415  (layers import activations only)

    try:
        shape = tuple(int(d) for d in input_shape)
    except (TypeError, ValueError):
        errors.append({"loc": ["input_shape"], "msg": f"input_shape must be a list of integers, got {input_shape!r}"})
        return
    if not shape or any(d <= 0 for d in shape):
        errors.append({"loc": ["input_shape"], "msg": f"input_shape must be positive integers, got {list(shape)}"})
        return
    total = 0
    for i, cfg in enumerate(spec["layers"]):
        if cfg.get("units", 0) is None:
            return  # output width unknown until the data is seen
        try:
            layer = layer_class(cfg["type"])(cfg, i)
            total += int(layer.n_params(shape))
            shape = tuple(layer.output_shape(shape))
        except Exception as exc:  # noqa: BLE001  (ShapeError, or a layer not written yet)
            errors.append({"loc": ["spec", "layers", i], "msg": f"{cfg['type']} cannot take input shape "
                                                                f"{list(shape)}: {exc}"})
            return
    if len(shape) != 1:
        errors.append({"loc": ["spec", "layers", len(spec["layers"]) - 1],
                       "msg": f"the network's output must be 1-D per sample, got shape {list(shape)} "
                              f"(add flatten and a dense layer)"})
    if total > limits.max_params:
        errors.append({"loc": ["spec", "layers"], "msg": f"the network has {total} parameters, over the limit "
                                                         f"max_params={limits.max_params}"})
