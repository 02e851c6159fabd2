"""A trained model as an ONNX graph (CONTRACT §7), built from the stored .npz and spec with the
`onnx` package's helpers: no engine, no PyTorch.

Input `input` (float32): (N, n_features) for a CSV/Parquet model, (N, *input_shape) for an .npz
one; the model's imputation and standardisation are the first nodes. Output `probabilities`
(N, classes) for classification, exactly what /predictions returns (a binary model with
labels: [1 - p, p]), or `predictions` (N, k) for regression. Recurrent layers become ONNX
RNN/LSTM/GRU with the gate blocks moved from PyTorch's order (LSTM i,f,g,o -> i,o,f,c; GRU
r,z,n -> z,r,h with linear_before_reset=1), fed time-major through a Transpose.
"""
from __future__ import annotations

import io
import json
import math
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from bps.models import Model
from bps.preprocessor import Preprocessor
from bps.problems import Unprocessable

OPSET = 17
IR_VERSION = 8  # the IR of opset 17: readable by every onnxruntime that runs the opset
FROM_LOGITS = {"cross_entropy": "softmax", "binary_cross_entropy": "sigmoid"}
GATE_ORDER = {"rnn": [0], "lstm": [0, 3, 1, 2], "gru": [1, 0, 2]}
SIMPLE_ACTIVATIONS = {"relu": ("Relu", {}), "sigmoid": ("Sigmoid", {}), "tanh": ("Tanh", {}),
                      "leaky_relu": ("LeakyRelu", {"alpha": 0.01}), "elu": ("Elu", {"alpha": 1.0}),
                      "softplus": ("Softplus", {}), "softmax": ("Softmax", {"axis": -1})}


class GraphBuilder:
    """Nodes and initializers with fresh names; each method returns its output's name."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []

    def _name(self, hint: str) -> str:
        return f"{hint}_{len(self.nodes) + len(self.initializers)}"

    def const(self, hint: str, array: Any, dtype: Any = np.float32) -> str:
        name = self._name(hint)
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array, dtype=dtype), name))
        return name

    def node(self, op: str, *inputs: str, outputs: int = 1, **attrs: Any) -> Any:
        names = [self._name(op.lower()) + (f"_{k}" if k else "") for k in range(outputs)]
        self.nodes.append(helper.make_node(op, list(inputs), names, **attrs))
        return names[0] if outputs == 1 else names


def activation(g: GraphBuilder, name: str, x: str) -> str:
    if name == "linear":
        return x
    if name == "gelu":  # erf form: x * 0.5 * (1 + erf(x / sqrt 2))
        erf = g.node("Erf", g.node("Mul", x, g.const("inv_sqrt2", 1 / math.sqrt(2))))
        return g.node("Mul", g.node("Mul", x, g.const("half", 0.5)), g.node("Add", erf, g.const("one", 1.0)))
    op, attrs = SIMPLE_ACTIVATIONS[name]
    return g.node(op, x, **attrs)


def dense(g: GraphBuilder, arrays: dict[str, np.ndarray], i: int, x: str, rank: int) -> str:
    weight, bias = arrays[f"{i}.weight"], arrays[f"{i}.bias"]
    if rank == 1:  # (N, in): one Gemm
        return g.node("Gemm", x, g.const("W", weight), g.const("b", bias), transB=1)
    return g.node("Add", g.node("MatMul", x, g.const("Wt", weight.T)), g.const("b", bias))  # nn.Linear on the last axis


def conv2d(g: GraphBuilder, arrays: dict[str, np.ndarray], i: int, cfg: dict[str, Any], x: str) -> str:
    weight = arrays[f"{i}.weight"]
    kh, kw = weight.shape[2:]
    if cfg.get("padding") == "same":  # PyTorch: the odd one at the end
        pads = [(kh - 1) // 2, (kw - 1) // 2, kh - 1 - (kh - 1) // 2, kw - 1 - (kw - 1) // 2]
    else:
        ph, pw = _pair(cfg.get("padding", 0))
        pads = [ph, pw, ph, pw]
    return g.node("Conv", x, g.const("W", weight), g.const("b", arrays[f"{i}.bias"]), kernel_shape=[kh, kw],
                  strides=_pair(cfg.get("stride", 1)), pads=pads)


def pool(g: GraphBuilder, cfg: dict[str, Any], x: str) -> str:
    size = _pair(cfg["pool_size"])
    op = "MaxPool" if cfg["type"] == "maxpool2d" else "AveragePool"
    return g.node(op, x, kernel_shape=size, strides=_pair(cfg.get("stride") or size))


def batchnorm(g: GraphBuilder, arrays: dict[str, np.ndarray], i: int, cfg: dict[str, Any], x: str) -> str:
    names = ("weight", "bias", "running_mean", "running_var")
    return g.node("BatchNormalization", x, *(g.const(n, arrays[f"{i}.{n}"]) for n in names),
                  epsilon=float(cfg.get("eps", 1e-5)))


def recurrent(g: GraphBuilder, arrays: dict[str, np.ndarray], i: int, cfg: dict[str, Any], x: str) -> str:
    """(N, T, F) -> (N, T, H) with return_sequences, else the last step (N, H)."""
    kind, units = cfg["type"], int(cfg["units"])

    def reordered(suffix: str) -> np.ndarray:
        blocks = arrays[f"{i}.{suffix}"]
        return np.concatenate([blocks[k * units:(k + 1) * units] for k in GATE_ORDER[kind]])

    W, R = reordered("weight_ih_l0")[None], reordered("weight_hh_l0")[None]
    B = np.concatenate([reordered("bias_ih_l0"), reordered("bias_hh_l0")])[None]
    attrs = {"hidden_size": units, **({"linear_before_reset": 1} if kind == "gru" else {})}
    time_major = g.node("Transpose", x, perm=[1, 0, 2])
    Y, Y_h = g.node(kind.upper() if kind != "rnn" else "RNN", time_major, g.const("W", W), g.const("R", R),
                    g.const("B", B), outputs=2, **attrs)
    if not cfg.get("return_sequences"):
        return g.node("Squeeze", Y_h, g.const("axes", [0], np.int64))  # (1, N, H) -> (N, H)
    steps = g.node("Squeeze", Y, g.const("axes", [1], np.int64))  # (T, 1, N, H) -> (T, N, H)
    return g.node("Transpose", steps, perm=[1, 0, 2])


def _pair(value: Any) -> list[int]:
    return [int(v) for v in value] if isinstance(value, (list, tuple)) else [int(value)] * 2


def layers(g: GraphBuilder, arrays: dict[str, np.ndarray], spec: dict[str, Any], x: str, rank: int) -> str:
    """The spec's layers on x (rank: dimensions per sample); the loss's output activation last."""
    output_activation = FROM_LOGITS.get(spec["loss"])
    last = len(spec["layers"]) - 1
    for i, cfg in enumerate(spec["layers"]):
        kind = cfg["type"]
        if kind == "dense":
            x = dense(g, arrays, i, x, rank)
        elif kind == "conv2d":
            x = conv2d(g, arrays, i, cfg, x)
        elif kind in ("maxpool2d", "avgpool2d"):
            x = pool(g, cfg, x)
        elif kind == "flatten":
            x, rank = g.node("Flatten", x, axis=1), 1
        elif kind == "batchnorm":
            x = batchnorm(g, arrays, i, cfg, x)
        elif kind in GATE_ORDER:
            x = recurrent(g, arrays, i, cfg, x)
            rank = 2 if cfg.get("return_sequences") else 1
        elif kind != "dropout":  # dropout is the identity at prediction
            raise ValueError(f"layer {i}: type {kind!r} has no ONNX export")
        if "activation" in cfg and not (i == last and output_activation):
            x = activation(g, cfg["activation"], x)
    return activation(g, output_activation, x) if output_activation else x


def preprocessing(g: GraphBuilder, prep: Preprocessor, x: str) -> str:
    """Imputation of missing values, standardisation and the reshape to input_shape."""
    if prep.source == "array":
        return _impute(g, x, prep.array_fill) if prep.array_fill is not None else x
    one_hot = [e["name"] for e in prep.encoders if e["kind"] != "numeric"]
    if one_hot:
        raise Unprocessable(f"the model one-hot encodes the text feature(s) {one_hot}, which the ONNX export "
                            "does not include: download format=npz, or train on numeric features only",
                            loc=["query", "format"])
    fills = [e.get("fill") for e in prep.encoders]
    if any(fill is not None for fill in fills):
        x = _impute(g, x, [np.nan if fill is None else fill for fill in fills])
    x = g.node("Sub", x, g.const("mean", [e["mean"] for e in prep.encoders]))
    x = g.node("Div", x, g.const("std", [e["std"] for e in prep.encoders]))
    if list(prep.input_shape) != [len(prep.encoders)]:
        x = g.node("Reshape", x, g.const("shape", [-1, *prep.input_shape], np.int64))
    return x


def _impute(g: GraphBuilder, x: str, fill: Any) -> str:
    missing = g.node("Or", g.node("IsNaN", x), g.node("IsInf", x))
    return g.node("Where", missing, g.const("fill", fill), x)


def export_onnx(model: Model) -> bytes:
    """The serialised ONNX model of `model` (422 when its features need one-hot encoding)."""
    with np.load(io.BytesIO(model.weights), allow_pickle=False) as saved:
        arrays = {name: saved[name] for name in saved.files}
    spec = json.loads(str(arrays["spec"]))
    prep = Preprocessor.from_json(model.preprocessing)
    g = GraphBuilder()
    x = preprocessing(g, prep, "input")
    out = layers(g, arrays, spec, x, rank=len(prep.input_shape))
    if prep.mode == "binary" and prep.classes is not None:  # [1 - p, p], as /predictions
        out = g.node("Concat", g.node("Sub", g.const("one", [[1.0]]), out), out, axis=1)
    output_name = "predictions" if prep.mode == "regression" else "probabilities"
    g.nodes.append(helper.make_node("Identity", [out], [output_name]))
    input_dims = ["N", len(prep.encoders)] if prep.source == "tabular" else ["N", *prep.input_shape]
    graph = helper.make_graph(
        g.nodes, f"bps_model_{model.id}", [helper.make_tensor_value_info("input", TensorProto.FLOAT, input_dims)],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, ["N", None])], g.initializers)
    onnx_model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION,
                                   producer_name="backprop-service")
    metadata = {"classes": model.classes, "features": model.features, "target": model.target, "spec": spec,
                "input_shape": list(prep.input_shape), "task": model.task}
    helper.set_model_props(onnx_model, {key: json.dumps(value) for key, value in metadata.items()})
    onnx.checker.check_model(onnx_model)
    return onnx_model.SerializeToString()
