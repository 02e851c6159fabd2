"""GET /v1/models/{id}/download?format=onnx: onnxruntime on the downloaded graph gives what
POST /v1/models/{id}/predictions gives (1e-5) for every layer type and activation, and the
graph passes onnx.checker. Models are trained in-test by the engine (a few epochs, so the
weights and the batchnorm running statistics are not their initial values)."""
from __future__ import annotations

import io
import json

import numpy as np
import onnx
import onnxruntime
import pytest

from tests.service.helpers import assert_problem, npz_bytes, store_trained_model, upload
from tests.service.test_models import _fresh_cache  # noqa: F401  (autouse: an empty model cache per test)

ACTIVATIONS = ("linear", "relu", "sigmoid", "tanh", "leaky_relu", "elu", "gelu", "softplus")
OPTIMIZER = {"type": "adam", "learning_rate": 0.01}


def tabular_csv(n: int = 48, labels: tuple = ("low", "mid", "high")) -> bytes:
    rng = np.random.default_rng(3)
    X = rng.normal(loc=[5.0, -2.0, 100.0], scale=[2.0, 0.5, 30.0], size=(n, 3))
    rows = [f"{a:.4f},{b:.4f},{c:.3f},{labels[int(a > 5) + int(b > -2)]},{a + 2 * b:.4f}" for a, b, c in X]
    return ("a,b,c,label,value\n" + "\n".join(rows) + "\n").encode()


def train(client, auth, settings, raw: bytes, fmt: str, spec: dict, target: str | None = None,  # noqa: ANN001
          drop: tuple = (), impute: str | None = None) -> str:
    if fmt == "csv" and drop:
        lines = [",".join(c for i, c in enumerate(line.split(",")) if i not in drop)
                 for line in raw.decode().splitlines()]
        raw = ("\n".join(lines) + "\n").encode()
    upload(client, auth, raw, f"data.{fmt}")
    return store_trained_model(settings, "alice", raw, fmt, target=target, impute=impute,
                               spec={"epochs": 3, "batch_size": 8, "optimizer": OPTIMIZER, "seed": 1, **spec})


def onnx_matches_predictions(client, auth, model_id: str, instances: list) -> onnx.ModelProto:  # noqa: ANN001
    """Runs the download with onnxruntime and compares with /predictions to 1e-5."""
    response = client.get(f"/v1/models/{model_id}/download?format=onnx", headers=auth)
    assert response.status_code == 200, response.get_data(as_text=True)
    model = onnx.load_from_string(response.data)
    onnx.checker.check_model(model, full_check=True)
    assert model.opset_import[0].version >= 17
    body = client.post(f"/v1/models/{model_id}/predictions", headers=auth, json={"instances": instances})
    assert body.status_code == 201, body.get_json()
    body = body.get_json()
    session = onnxruntime.InferenceSession(response.data, providers=["CPUExecutionProvider"])
    [output] = session.get_outputs()
    (got,) = session.run(None, {"input": np.asarray(instances, dtype=np.float32)})
    if body["probabilities"] is not None:
        assert output.name == "probabilities"
        expected = np.asarray(body["probabilities"])
    else:
        assert output.name == "predictions"
        expected = np.asarray(body["predictions"], dtype=np.float64).reshape(len(instances), -1)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    return model


@pytest.mark.parametrize("act", ACTIVATIONS)
def test_dense_with_every_activation_and_standardisation(client, auth, settings, act: str) -> None:  # noqa: ANN001
    spec = {"layers": [{"type": "dense", "units": 6, "activation": act}, {"type": "dropout", "rate": 0.3},
                       {"type": "dense", "activation": act}], "loss": "mse"}
    model_id = train(client, auth, settings, tabular_csv(), "csv", spec, target="value", drop=(3,))
    rows = np.random.default_rng(0).normal(loc=[5.0, -2.0, 100.0], scale=[2.0, 0.5, 30.0], size=(9, 3))
    onnx_matches_predictions(client, auth, model_id, rows.tolist())


def test_softmax_output_carries_labels_features_and_spec(client, auth, settings) -> None:  # noqa: ANN001
    spec = {"layers": [{"type": "dense", "units": 8, "activation": "tanh"}, {"type": "dense", "activation": "softmax"}],
            "loss": "cross_entropy"}
    model_id = train(client, auth, settings, tabular_csv(), "csv", spec, target="label", drop=(4,))
    model = onnx_matches_predictions(client, auth, model_id, [[5.0, -2.0, 90.0], [9.0, -1.0, 120.0]])
    meta = {p.key: json.loads(p.value) for p in model.metadata_props}
    assert meta["classes"] == ["high", "low", "mid"] and meta["features"] == ["a", "b", "c"]
    assert meta["target"] == "label" and meta["spec"]["loss"] == "cross_entropy"


def test_binary_sigmoid_output_is_both_probabilities(client, auth, settings) -> None:  # noqa: ANN001
    raw = tabular_csv(labels=("no", "yes", "yes"))
    spec = {"layers": [{"type": "dense", "units": 4, "activation": "elu"}, {"type": "dense", "activation": "sigmoid"}],
            "loss": "binary_cross_entropy"}
    model_id = train(client, auth, settings, raw, "csv", spec, target="label", drop=(4,))
    onnx_matches_predictions(client, auth, model_id, [[5.0, -2.0, 90.0], [2.0, -3.0, 20.0], [9.0, -1.0, 1.0]])


def images(n: int = 32) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(5)
    X = rng.normal(size=(n, 2, 7, 7))
    return X, (X[:, 0, :3].sum(axis=(1, 2)) > 0).astype(np.int64)


@pytest.mark.parametrize("convs", [
    [{"type": "conv2d", "filters": 3, "kernel_size": 3, "stride": 2, "padding": 1, "activation": "relu"},
     {"type": "maxpool2d", "pool_size": 2}],
    [{"type": "conv2d", "filters": 4, "kernel_size": [2, 4], "padding": "same", "activation": "gelu"},
     {"type": "batchnorm", "momentum": 0.5}, {"type": "avgpool2d", "pool_size": 3, "stride": 2},
     {"type": "conv2d", "filters": 2, "kernel_size": 2, "activation": "leaky_relu"}],
])
def test_conv_pool_batchnorm_flatten(client, auth, settings, convs: list) -> None:  # noqa: ANN001
    X, y = images()
    spec = {"layers": [*convs, {"type": "flatten"}, {"type": "batchnorm"},
                       {"type": "dense", "units": 5, "activation": "softplus"}, {"type": "dense", "activation": "softmax"}],
            "loss": "cross_entropy"}
    model_id = train(client, auth, settings, npz_bytes(X=X, y=y), "npz", spec)
    onnx_matches_predictions(client, auth, model_id, X[:6].tolist())


def test_batchnorm_uses_the_running_statistics_training_updated(client, auth, settings) -> None:  # noqa: ANN001
    X, y = images()
    X = X.reshape(len(X), -1)[:, :10] * 4 + 3  # far from the initial running mean 0 and variance 1
    spec = {"layers": [{"type": "batchnorm", "momentum": 0.3}, {"type": "dense", "units": 4, "activation": "sigmoid"},
                       {"type": "batchnorm"}, {"type": "dense", "activation": "softmax"}], "loss": "cross_entropy"}
    model_id = train(client, auth, settings, npz_bytes(X=X, y=y), "npz", spec)
    saved = np.load(io.BytesIO(client.get(f"/v1/models/{model_id}/download?format=npz", headers=auth).data))
    assert int(saved["0.num_batches_tracked"]) > 0 and saved["0.running_mean"].mean() > 1.0
    onnx_matches_predictions(client, auth, model_id, X[:8].tolist())


def sequences(n: int = 24) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    X = rng.normal(size=(n, 5, 3))
    return X, X[:, :, 0].sum(axis=1, keepdims=True)


@pytest.mark.parametrize("stack", [
    [{"type": "rnn", "units": 4}],
    [{"type": "lstm", "units": 5}],
    [{"type": "gru", "units": 3}],
    [{"type": "lstm", "units": 4, "return_sequences": True}, {"type": "gru", "units": 3, "return_sequences": True},
     {"type": "rnn", "units": 2}],
    [{"type": "gru", "units": 4, "return_sequences": True}, {"type": "lstm", "units": 3, "return_sequences": True},
     {"type": "dense", "units": 2, "activation": "tanh"}, {"type": "flatten"}],
    [{"type": "rnn", "units": 3, "return_sequences": True}, {"type": "batchnorm"}, {"type": "flatten"}],
])
def test_recurrent_stacks(client, auth, settings, stack: list) -> None:  # noqa: ANN001
    X, y = sequences()
    spec = {"layers": [*stack, {"type": "dense", "units": 1}], "loss": "mse"}
    model_id = train(client, auth, settings, npz_bytes(X=X, y=y), "npz", spec)
    onnx_matches_predictions(client, auth, model_id, X[:5].tolist())


def test_imputed_missing_values_are_filled_in_the_graph(client, auth, settings) -> None:  # noqa: ANN001
    lines = tabular_csv().decode().splitlines()
    lines[3:6] = ["," + line.split(",", 1)[1] for line in lines[3:6]]  # column a missing in three rows
    raw = ("\n".join(lines) + "\n").encode()
    spec = {"layers": [{"type": "dense", "units": 3, "activation": "relu"}, {"type": "dense"}], "loss": "mse"}
    model_id = train(client, auth, settings, raw, "csv", spec, target="value", drop=(3,), impute="median")
    response = client.get(f"/v1/models/{model_id}/download?format=onnx", headers=auth)
    session = onnxruntime.InferenceSession(response.data, providers=["CPUExecutionProvider"])
    rows = np.array([[np.nan, -2.0, 90.0], [4.0, -2.0, 90.0]], dtype=np.float32)
    (got,) = session.run(None, {"input": rows})
    body = client.post(f"/v1/models/{model_id}/predictions", headers=auth,
                       json={"records": [{"a": None, "b": -2.0, "c": 90.0},
                                         {"a": 4.0, "b": -2.0, "c": 90.0}]}).get_json()
    np.testing.assert_allclose(got[:, 0], body["predictions"], rtol=1e-5, atol=1e-5)


def test_one_hot_features_answer_422_and_another_tenant_404(client, auth, auth_b, settings) -> None:  # noqa: ANN001
    spec = {"layers": [{"type": "dense", "units": 3, "activation": "relu"}, {"type": "dense"}], "loss": "mse"}
    model_id = train(client, auth, settings, tabular_csv(), "csv", spec, target="value")
    assert_problem(client.get(f"/v1/models/{model_id}/download?format=onnx", headers=auth), 422,
                   "one-hot", "'label'", "npz")
    assert_problem(client.get(f"/v1/models/{model_id}/download?format=onnx", headers=auth_b), 404)
