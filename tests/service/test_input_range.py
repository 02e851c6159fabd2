"""Finite inputs beyond a model's dtype (1e39 for float32) through the HTTP API: a 422 naming the
row and the column at prediction (instances, records, dataset_id) and at job submission, never a
201 with nulls; and the property that no finite input of any magnitude yields a 2xx with a null
or NaN in it."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.predict import clear_cache
from tests.service.helpers import assert_problem, npz_bytes, store_trained_model, upload

CLASSIFIER = {"layers": [{"type": "dense", "units": 8, "activation": "relu"}, {"type": "dense", "activation": "softmax"}],
              "loss": "cross_entropy", "optimizer": {"type": "adam", "learning_rate": 0.05}, "epochs": 20, "seed": 0}
REGRESSOR = {"layers": [{"type": "dense", "units": 8, "activation": "relu"}, {"type": "dense", "units": 1}],
             "loss": "mse", "optimizer": {"type": "adam", "learning_rate": 0.05}, "epochs": 20, "seed": 0}
FEATURES = ("sepal", "petal")


def table(label: callable, n: int = 60) -> bytes:  # type: ignore[valid-type]
    x = np.random.default_rng(0).normal(size=(n, 2))
    return ("sepal,petal,label\n" + "".join(f"{a:.4f},{b:.4f},{label(a, b)}\n" for a, b in x)).encode()


CLASSES_CSV = table(lambda a, b: "setosa" if a + b > 0 else "virginica")
VALUES_CSV = table(lambda a, b: f"{3 * a - b:.4f}")


@pytest.fixture
def models(client, auth, settings) -> dict[str, str]:  # noqa: ANN001
    clear_cache()
    upload(client, auth, CLASSES_CSV)
    return {"classifier": store_trained_model(settings, "alice", CLASSES_CSV, "csv", target="label", spec=CLASSIFIER),
            "regressor": store_trained_model(settings, "alice", VALUES_CSV, "csv", target="label", spec=REGRESSOR)}


def predict(client, auth, model_id: str, **body):  # noqa: ANN001, ANN003, ANN201
    return client.post(f"/v1/models/{model_id}/predictions", json=body, headers=auth)


@pytest.mark.parametrize("kind", ["classifier", "regressor"])
def test_a_value_beyond_float32_is_a_422_naming_row_and_column(client, auth, models, kind) -> None:  # noqa: ANN001
    rows = [[1.0, 2.0], [0.5, 1e39]]
    body = assert_problem(predict(client, auth, models[kind], instances=rows), 422, "row 1", "'petal'", "float32")
    assert body["errors"][0]["loc"] == ["body", "instances", 1, "petal"]
    records = [dict(zip(FEATURES, row, strict=True)) for row in rows]
    body = assert_problem(predict(client, auth, models[kind], records=records), 422, "row 1", "'petal'")
    assert body["errors"][0]["loc"] == ["body", "records", 1, "petal"]
    assert_problem(predict(client, auth, models[kind], instances=[[-1e39, 0.0]]), 422, "row 0", "'sepal'")


def test_a_stored_dataset_with_a_huge_value_is_a_422_naming_row_and_column(client, auth, models) -> None:  # noqa: ANN001
    raw = b"sepal,petal\n1.0,2.0\n3.0,4.0\n-2e39,1.0\n"
    dataset_id = upload(client, auth, raw).get_json()["id"]
    body = assert_problem(predict(client, auth, models["classifier"], dataset_id=dataset_id), 422, "row 2", "'sepal'")
    assert body["errors"][0]["loc"][:2] == ["body", "dataset_id"]


def test_an_output_that_overflows_inside_the_network_is_a_422(client, auth, models) -> None:  # noqa: ANN001
    """3e38 fits float32, but the first layer's products overflow: never a null answered 201."""
    response = predict(client, auth, models["regressor"], instances=[[0.0, 1.0], [3e38, -3e38]])
    body = assert_problem(response, 422, "row 1", "overflows")
    assert body["errors"][0]["loc"][:3] == ["body", "instances", 1]


def test_an_asynchronous_prediction_names_the_row_and_column_as_the_synchronous_422(client, auth, models, settings,  # noqa: ANN001
                                                                                   published_predictions) -> None:
    from worker.prediction_runner import run_prediction  # noqa: PLC0415

    dataset_id = upload(client, auth, b"sepal,petal\n0.0,1.0\n1.0,0.5\n3e38,-3e38\n").get_json()["id"]
    sync = assert_problem(predict(client, auth, models["regressor"], dataset_id=dataset_id), 422, "overflows")
    row, column = sync["errors"][0]["loc"][2:]
    queued = predict(client, auth, models["regressor"], dataset_id=dataset_id, **{"async": True}).get_json()
    assert published_predictions == [(queued["id"], "cpu")]
    run_prediction(queued["id"], settings=settings)
    failed = client.get(f"/v1/predictions/{queued['id']}", headers=auth).get_json()
    assert failed["status"] == "failed"
    assert f"row {row} " in failed["error"] and f"column {column!r}" in failed["error"], failed["error"]


def test_submission_refuses_a_regression_target_or_npz_x_beyond_the_spec_dtype(client, auth, published) -> None:  # noqa: ANN001
    raw = b"sepal,petal,label\n1,2,a\n3,4e39,b\n5,6,a\n7,8,b\n"
    dataset_id = upload(client, auth, raw).get_json()["id"]
    # a feature is standardised before it reaches the network: 4e39 becomes about 1.7, it fits
    body = {"dataset_id": dataset_id, "target": "label", "spec": CLASSIFIER}
    assert client.post("/v1/jobs", json=body, headers=auth).status_code == 202
    regression = {"dataset_id": dataset_id, "target": "petal", "features": ["sepal"], "spec": REGRESSOR}
    problem = assert_problem(client.post("/v1/jobs", json=regression, headers=auth), 422, "'petal'", "float32",
                             "float64")
    assert ["dataset", "petal"] in [e["loc"] for e in problem["errors"]]
    float64 = {**regression, "spec": {**REGRESSOR, "dtype": "float64"}}
    assert client.post("/v1/jobs", json=float64, headers=auth).status_code == 202
    for X, y, name in ((np.ones((4, 2)), np.array([1.0, 2.0, 3.0, 5e38]), "y"),
                       (np.array([[1.0, 2.0]] * 3 + [[1.0, -5e38]]), np.arange(4.0), "X")):
        npz_id = upload(client, auth, npz_bytes(X=X, y=y), filename="d.npz").get_json()["id"]
        problem = assert_problem(client.post("/v1/jobs", json={"dataset_id": npz_id, "spec": REGRESSOR}, headers=auth),
                                 422, f"'{name}'")
        assert ["dataset", name] in [e["loc"] for e in problem["errors"]]


def _no_null_or_nan(value: object) -> bool:
    if isinstance(value, list):
        return all(_no_null_or_nan(v) for v in value)
    return value is not None and not (isinstance(value, float) and not math.isfinite(value))


FINITE = st.floats(allow_nan=False, allow_infinity=False)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.tuples(FINITE, FINITE), min_size=1, max_size=4), kind=st.sampled_from(["classifier", "regressor"]),
       as_records=st.booleans())
def test_no_finite_input_of_any_magnitude_answers_a_null(client, auth, models, rows, kind, as_records) -> None:  # noqa: ANN001
    body = {"records": [dict(zip(FEATURES, row, strict=True)) for row in rows]} if as_records else \
        {"instances": [list(row) for row in rows]}
    response = predict(client, auth, models[kind], **body)
    assert response.status_code in (201, 422), response.get_data(as_text=True)
    answer = response.get_json()
    if response.status_code == 201:
        assert _no_null_or_nan(answer["predictions"]) and _no_null_or_nan(answer["probabilities"] or [])
    else:
        assert "row" in answer["detail"]
