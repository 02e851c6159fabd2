"""/v1/models/{id}, download, predictions (instances, records, dataset_id) with a model
trained in-test by the engine; labels come back exactly as uploaded."""
from __future__ import annotations

import io

import numpy as np
import pytest

from service.predict import clear_cache
from tests.service.helpers import assert_problem, npz_bytes, store_trained_model, upload

SPEC = {
    "layers": [{"type": "dense", "units": 16, "activation": "relu"}, {"type": "dense", "activation": "softmax"}],
    "loss": "cross_entropy", "optimizer": {"type": "adam", "learning_rate": 0.05}, "epochs": 60, "batch_size": 16,
    "seed": 0,
}


def separable_csv(n: int = 80, labels: tuple = ("cat", "dog")) -> bytes:
    """Label = labels[1] when x > 0, shade is a distractor string feature."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=n) * 3
    rows = [f"{v:.4f},{'dark' if i % 2 else 'light'},{labels[int(v > 0)]}" for i, v in enumerate(x)]
    return ("x,shade,label\n" + "\n".join(rows) + "\n").encode()


@pytest.fixture(autouse=True)
def _fresh_cache():  # noqa: ANN202
    clear_cache()
    yield
    clear_cache()


@pytest.fixture
def model_id(client, auth, settings) -> str:  # noqa: ANN001
    raw = separable_csv()
    upload(client, auth, raw)
    return store_trained_model(settings, "alice", raw, "csv", target="label", spec=SPEC)


def test_model_resource(client, auth, model_id) -> None:  # noqa: ANN001
    body = client.get(f"/v1/models/{model_id}", headers=auth).get_json()
    assert body["task"] == "classification" and body["classes"] == ["cat", "dog"]
    assert body["features"] == ["x", "shade"] and body["target"] == "label" and body["input_shape"] == [3]


def test_predict_instances_and_records_return_string_labels(client, auth, model_id) -> None:  # noqa: ANN001
    response = client.post(f"/v1/models/{model_id}/predictions", headers=auth,
                           json={"instances": [[-6.0, "dark"], [6.0, "light"], [5.0, "unseen shade"]]})
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    assert body["n"] == 3 and body["predictions"] == ["cat", "dog", "dog"]
    assert all(len(p) == 2 and sum(p) == pytest.approx(1.0) for p in body["probabilities"])
    assert client.get(response.headers["Location"], headers=auth).get_json() == body
    records = [{"x": -4, "shade": "light"}, {"shade": "dark", "x": 4}]
    body = client.post(f"/v1/models/{model_id}/predictions", headers=auth, json={"records": records}).get_json()
    assert body["predictions"] == ["cat", "dog"]


def test_predict_a_stored_dataset(client, auth, model_id) -> None:  # noqa: ANN001
    raw = separable_csv(40)
    dataset_id = upload(client, auth, raw).get_json()["id"]
    body = client.post(f"/v1/models/{model_id}/predictions", headers=auth, json={"dataset_id": dataset_id}).get_json()
    expected = [line.split(",")[2] for line in raw.decode().splitlines()[1:]]
    accuracy = np.mean([p == e for p, e in zip(body["predictions"], expected, strict=True)])
    assert body["n"] == 40 and accuracy >= 0.9


def test_integer_labels_come_back_as_integers(client, auth, settings) -> None:  # noqa: ANN001
    raw = separable_csv(labels=(3, 7))
    upload(client, auth, raw)
    model_id = store_trained_model(settings, "alice", raw, "csv", target="label", spec=SPEC)
    body = client.post(f"/v1/models/{model_id}/predictions", headers=auth,
                       json={"instances": [[-6, "dark"], [6, "dark"]]}).get_json()
    assert body["predictions"] == [3, 7]


def test_regression_on_npz(client, auth, settings) -> None:  # noqa: ANN001
    rng = np.random.default_rng(0)
    X = rng.normal(size=(64, 2, 2))
    y = X.reshape(64, -1).sum(axis=1)
    raw = npz_bytes(X=X, y=y)
    upload(client, auth, raw, "r.npz")
    spec = {"layers": [{"type": "flatten"}, {"type": "dense"}], "loss": "mse", "epochs": 200,
            "optimizer": {"type": "adam", "learning_rate": 0.05}, "batch_size": 16}
    model_id = store_trained_model(settings, "alice", raw, "npz", target=None, spec=spec)
    body = client.post(f"/v1/models/{model_id}/predictions", headers=auth,
                       json={"instances": [[[1.0, 1.0], [1.0, 0.0]]]}).get_json()
    assert body["probabilities"] is None and body["predictions"][0] == pytest.approx(3.0, abs=0.3)


@pytest.mark.parametrize(("body", "status", "needles"), [
    ({"instances": [[1.0]]}, 422, ["2 features"]),
    ({"records": [{"x": 1.0}]}, 422, ["shade"]),
    ({"records": [{"x": "abc", "shade": "dark"}]}, 422, ["'x'", "numeric"]),
    ({"instances": [[1.0, "dark"]] * 51}, 413, ["MAX_PREDICTION_ROWS"]),
    ({"instances": [[1.0, "dark"], [True, "dark"]]}, 422, ["'x'", "row 1", "true, a boolean"]),
    ({"records": [{"x": False, "shade": "dark"}]}, 422, ["'x'", "row 0", "false, a boolean"]),
    ({"instances": [[1.0, "dark"]], "records": [{"x": 1}]}, 422, ["exactly one"]),
    ({}, 422, ["exactly one"]),
    ({"dataset_id": "missing"}, 422, ["dataset missing not found"]),
    ({"instances": [], "extra": 1}, 422, ["unknown field"]),
])
def test_prediction_errors(client, auth, model_id, body, status, needles) -> None:  # noqa: ANN001
    assert_problem(client.post(f"/v1/models/{model_id}/predictions", headers=auth, json=body), status, *needles)


def test_too_many_rows_name_the_limit_in_the_problems_max_rows(client, auth, model_id) -> None:  # noqa: ANN001
    """The app under test has MAX_PREDICTION_ROWS = 50: a client shrinks its pieces to max_rows."""
    body = {"instances": [[1.0, "dark"]] * 51}
    problem = assert_problem(client.post(f"/v1/models/{model_id}/predictions", headers=auth, json=body), 413)
    assert problem["max_rows"] == 50


@pytest.mark.parametrize(("body", "loc"), [
    ({"instances": [[1.0]]}, ["body", "instances"]),
    ({"dataset_id": "missing"}, ["body", "dataset_id"]),
    ({"instances": [[True, "dark"]]}, ["body", "instances", "x"]),
    ({"records": [{"x": True, "shade": "dark"}]}, ["body", "records", "x"]),
])
def test_prediction_errors_name_where_in_the_body(client, auth, model_id, body, loc) -> None:  # noqa: ANN001
    errors = client.post(f"/v1/models/{model_id}/predictions", headers=auth, json=body).get_json()["errors"]
    assert [e["loc"] for e in errors] == [loc]


def test_download_npz_has_state_dict_names_and_spec(client, auth, model_id) -> None:  # noqa: ANN001
    response = client.get(f"/v1/models/{model_id}/download?format=npz", headers=auth)
    assert response.status_code == 200
    with np.load(io.BytesIO(response.data), allow_pickle=False) as data:
        assert data["0.weight"].shape == (16, 3) and data["1.weight"].shape == (2, 16)
        assert '"cross_entropy"' in str(data["spec"]) and '"classes"' in str(data["preprocessing"])
    assert_problem(client.get(f"/v1/models/{model_id}/download?format=pmml", headers=auth), 400, "pmml")


def test_loaded_models_are_cached(client, auth, model_id, monkeypatch) -> None:  # noqa: ANN001
    import service.predict

    loads = []
    original = service.predict.load_network
    monkeypatch.setattr(service.predict, "load_network", lambda weights: loads.append(1) or original(weights))
    for _ in range(3):
        client.post(f"/v1/models/{model_id}/predictions", headers=auth, json={"instances": [[1.0, "dark"]]})
    assert len(loads) == 1
