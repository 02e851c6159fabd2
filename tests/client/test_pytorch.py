"""bps_client.torch_module: the downloaded .npz as a torch.nn.Module, preprocessing included,
computes what /predictions computes: against the real service for an iris model, and against
the engine's own predict for every layer family (conv, pooling, recurrent, batchnorm, dropout)."""
from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest
import torch

from bps.preprocessing import prepare_training_data
from bps_client import torch_module
from tests.client.conftest import IRIS
from worker.engine import Network


def npz_file(net: Network, prep, path) -> str:  # noqa: ANN001
    """The file GET /v1/models/{id}/download?format=npz gives: the engine's arrays + preprocessing."""
    buffer = io.BytesIO()
    net.save(buffer)
    with np.load(io.BytesIO(buffer.getvalue()), allow_pickle=False) as saved:
        arrays = {name: saved[name] for name in saved.files}
    np.savez(path, **arrays, preprocessing=np.array(json.dumps(prep.to_json())))
    return str(path)


@pytest.mark.slow
def test_reproduces_the_services_predictions(client, trained, tmp_path):
    frame = pd.read_csv(IRIS).drop(columns="species")
    served = list(client.predict_chunks(trained["model_id"], [frame]))
    probabilities = np.array([p for piece in served for p in piece["probabilities"]])
    labels = [label for piece in served for label in piece["predictions"]]
    module = torch_module(client.download(trained["model_id"], tmp_path / "iris.npz"))
    assert isinstance(module, torch.nn.Module) and not module.training
    with torch.no_grad():
        out = module(torch.tensor(frame.to_numpy()))
    np.testing.assert_allclose(out.numpy(), probabilities, rtol=1e-5, atol=1e-6)
    classes = client.model(trained["model_id"])["classes"]
    assert [classes[i] for i in out.argmax(1).tolist()] == labels
    assert "0.weight" in module.state_dict() and "input_mean" in module.state_dict()


def _fit(raw: bytes, fmt: str, spec: dict, **prep_args) -> tuple[Network, object, np.ndarray]:  # noqa: ANN003
    X, y, prep = prepare_training_data(raw, fmt, task=spec["loss"], **{"target": None, "features": None,
                                                                       "input_shape": None, **prep_args})
    net = Network.from_spec({**spec, "epochs": 2, "seed": 0, "device": "cpu"}, input_shape=X.shape[1:],
                            n_outputs=prep.n_outputs)
    net.fit(X, y)
    return net, prep, X


def test_tabular_regression_with_batchnorm_dropout_and_imputation(tmp_path):
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(5, 3, (60, 3)), columns=["a", "b", "c"])
    frame["y"] = frame.sum(axis=1)
    frame.loc[3, "b"] = np.nan
    spec = {"layers": [{"type": "dense", "units": 8, "activation": "elu"}, {"type": "batchnorm"},
                       {"type": "dropout", "rate": 0.3}, {"type": "dense", "units": 1}],
            "loss": "mse", "dtype": "float64"}
    net, prep, X = _fit(frame.to_csv(index=False).encode(), "csv", spec, target="y", impute="median")
    module = torch_module(npz_file(net, prep, tmp_path / "m.npz"))
    raw = frame[["a", "b", "c"]].to_numpy()
    with torch.no_grad():
        out = module(torch.tensor(raw)).numpy()
    np.testing.assert_allclose(out, net.predict(X), rtol=1e-10, atol=1e-12)
    assert np.isfinite(out[3]).all(), "the missing value is filled as at training"


@pytest.mark.parametrize("layers", [
    [{"type": "conv2d", "filters": 4, "kernel_size": 3, "padding": "same", "activation": "relu"},
     {"type": "maxpool2d", "pool_size": 2}, {"type": "batchnorm"},
     {"type": "conv2d", "filters": 3, "kernel_size": 2, "stride": 1, "activation": "gelu"},
     {"type": "avgpool2d", "pool_size": 1}, {"type": "flatten"}, {"type": "dense", "activation": "softmax"}],
    [{"type": "lstm", "units": 5, "return_sequences": True}, {"type": "gru", "units": 4, "return_sequences": True},
     {"type": "rnn", "units": 3}, {"type": "dense", "units": 6, "activation": "tanh"},
     {"type": "dense", "activation": "softmax"}],
], ids=["conv", "recurrent"])
def test_array_models_of_every_layer_family(tmp_path, layers):
    rng = np.random.default_rng(1)
    shape = (1, 6, 6) if layers[0]["type"] == "conv2d" else (5, 3)
    X, y = rng.standard_normal((40, *shape)).astype(np.float32), rng.integers(0, 3, 40)
    buffer = io.BytesIO()
    np.savez(buffer, X=X, y=y)
    spec = {"layers": layers, "loss": "cross_entropy", "dtype": "float32"}
    net, prep, inputs = _fit(buffer.getvalue(), "npz", spec)
    module = torch_module(npz_file(net, prep, tmp_path / "m.npz"))
    with torch.no_grad():
        out = module(torch.tensor(X)).numpy()
    np.testing.assert_allclose(out, net.predict(inputs), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(out.sum(1), 1.0, rtol=1e-5)


def test_one_hot_features_are_refused_with_their_names(tmp_path):
    frame = pd.DataFrame({"x": np.arange(20.0), "colour": ["red", "blue"] * 10, "label": [0, 1] * 10})
    spec = {"layers": [{"type": "dense", "activation": "softmax"}], "loss": "cross_entropy"}
    net, prep, _ = _fit(frame.to_csv(index=False).encode(), "csv", spec, target="label")
    with pytest.raises(ValueError, match="colour"):
        torch_module(npz_file(net, prep, tmp_path / "m.npz"))
