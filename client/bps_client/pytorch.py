"""`torch_module(path)`: a torch.nn.Module from a model downloaded as .npz that computes what
POST /v1/models/{id}/predictions computes (probabilities for classification, values for
regression), the model's preprocessing included: missing values filled and numeric features
standardised as at training. Its input: float rows of the features in the model's feature order
(or arrays of `input_shape` for a model trained on .npz arrays), as `instances` takes them.

Sub-module `i` is spec layer `i` with the engine's parameter names and layouts (CONTRACT §4),
so `module.state_dict()` holds the file's arrays under the same names. NumPy and PyTorch are
imported only here."""
from __future__ import annotations

import json
from typing import Any

CLASSIFICATION_OUTPUTS = {"cross_entropy": "softmax", "binary_cross_entropy": "sigmoid"}


def _activations(F: Any) -> dict[str, Any]:
    return {"linear": lambda x: x, "relu": F.relu, "sigmoid": F.sigmoid, "tanh": F.tanh,
            "leaky_relu": lambda x: F.leaky_relu(x, 0.01), "elu": F.elu, "gelu": F.gelu, "softplus": F.softplus,
            "softmax": lambda x: F.softmax(x, dim=-1)}


def _recurrent(nn: Any, kind: str, n_in: int, units: int, return_sequences: bool) -> Any:
    base = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}[kind]

    class Recurrent(base):  # the parameters keep PyTorch's own names (weight_ih_l0, ...)
        def forward(self, x: Any) -> Any:  # noqa: ANN401
            out = super().forward(x)[0]
            return out if return_sequences else out[:, -1]

    return Recurrent(n_in, units, batch_first=True)


def _layer(nn: Any, i: int, cfg: dict, arrays: dict, rank: int) -> tuple[Any, int]:
    """(the torch module of spec layer i, the rank of its output)."""
    kind, weight = cfg["type"], arrays.get(f"{i}.weight")
    if kind == "dense":
        return nn.Linear(weight.shape[1], weight.shape[0]), rank
    if kind == "conv2d":
        out_c, in_c, kh, kw = weight.shape
        padding = cfg.get("padding", 0)
        return nn.Conv2d(in_c, out_c, (kh, kw), stride=cfg.get("stride", 1),
                         padding="same" if padding == "same" else padding), 4
    if kind in ("maxpool2d", "avgpool2d"):
        pool = nn.MaxPool2d if kind == "maxpool2d" else nn.AvgPool2d
        return pool(cfg["pool_size"], stride=cfg.get("stride") or cfg["pool_size"]), 4
    if kind == "flatten":
        return nn.Flatten(), 2
    if kind in ("rnn", "lstm", "gru"):
        n_in = arrays[f"{i}.weight_ih_l0"].shape[1]
        return _recurrent(nn, kind, n_in, cfg["units"], cfg.get("return_sequences", False)), \
            3 if cfg.get("return_sequences") else 2
    if kind == "batchnorm":
        norm = nn.BatchNorm2d if rank == 4 else nn.BatchNorm1d
        return norm(weight.shape[0], eps=cfg.get("eps", 1e-5), momentum=cfg.get("momentum", 0.1)), rank
    if kind == "dropout":
        return nn.Dropout(cfg.get("rate", 0.0)), rank
    raise ValueError(f"layer {i}: type {kind!r} is not known to torch_module")


def _input_transform(prep: dict, np: Any) -> tuple[Any, Any, Any]:
    """(fill, mean, std) per flat input column (float64)."""
    if prep.get("source") == "array" or not prep.get("encoders"):
        fill = prep.get("array_fill")
        return (np.array(np.nan if fill is None else fill), np.array(0.0), np.array(1.0))
    encoders = prep["encoders"]
    one_hot = [e["name"] for e in encoders if e["kind"] != "numeric"]
    if one_hot:
        raise ValueError(f"features {one_hot} are one-hot encoded strings: torch_module takes numeric inputs only")
    fills = [np.nan if e.get("fill") is None else e["fill"] for e in encoders]
    return (np.array(fills, dtype=np.float64), np.array([e["mean"] for e in encoders], dtype=np.float64),
            np.array([e["std"] for e in encoders], dtype=np.float64))


def _read_file(path: Any, np: Any) -> tuple[dict, dict, list[int], str, dict]:
    """(the weight arrays, spec, input_shape, dtype name, preprocessing) of a downloaded .npz."""
    with np.load(path, allow_pickle=False) as saved:
        arrays = {name: saved[name] for name in saved.files}
    spec = json.loads(str(arrays.pop("spec")))
    input_shape = [int(d) for d in arrays.pop("input_shape")]
    dtype_name = str(arrays.pop("dtype", np.array(spec.get("dtype", "float32"))))
    prep = json.loads(str(arrays.pop("preprocessing", np.array("{}")))) or {}
    arrays.pop("format", None)
    return arrays, spec, input_shape, dtype_name, prep


def torch_module(path: Any) -> Any:
    import numpy as np  # noqa: PLC0415
    import torch  # noqa: PLC0415
    from torch import nn  # noqa: PLC0415

    arrays, spec, input_shape, dtype_name, prep = _read_file(path, np)
    dtype = getattr(torch, dtype_name)
    fill, mean, std = _input_transform(prep, np)
    acts = _activations(torch.nn.functional)

    class BpsModel(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.input_shape = input_shape
            self.register_buffer("input_fill", torch.from_numpy(fill))
            self.register_buffer("input_mean", torch.from_numpy(mean))
            self.register_buffer("input_std", torch.from_numpy(std))
            rank, self.activations = 1 + len(input_shape), []
            for i, cfg in enumerate(spec["layers"]):
                module, rank = _layer(nn, i, cfg, arrays, rank)
                self.add_module(str(i), module.to(dtype))  # the input buffers stay float64, as the server's
                self.activations.append(acts[cfg.get("activation") or "linear"])
            if spec["loss"] in CLASSIFICATION_OUTPUTS:  # the engine fuses it with the loss; predict applies it
                self.activations[-1] = acts[CLASSIFICATION_OUTPUTS[spec["loss"]]]

        def forward(self, x: Any) -> Any:  # noqa: ANN401
            x = torch.as_tensor(x, dtype=torch.float64)
            flat = x.reshape(x.shape[0], -1)
            flat = torch.where(torch.isnan(flat), self.input_fill, flat)
            x = ((flat - self.input_mean) / self.input_std).reshape(x.shape[0], *self.input_shape).to(dtype)
            for i, activation in enumerate(self.activations):
                x = activation(getattr(self, str(i))(x))
            return x

    model = BpsModel()
    _load_weights(model, arrays, torch)
    return model.eval()


def _load_weights(model: Any, arrays: dict, torch: Any) -> None:
    state = {name: torch.from_numpy(array.copy()) for name, array in arrays.items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked") and not k.startswith("input_")]
    if missing or unexpected:
        raise ValueError(f"the model file does not match its spec: missing {missing}, unexpected {unexpected}")
