"""POST /v1/models/{id}/evaluations: the metrics agree with the model's own predictions of
the same rows; held-out data that cannot be scored is refused with the reason."""
from __future__ import annotations

import numpy as np
import pytest

from tests.service.helpers import assert_problem, store_trained_model, upload

CLASSIFIERS = {
    "cross_entropy": {"layers": [{"type": "dense", "units": 8, "activation": "relu"},
                                 {"type": "dense", "activation": "softmax"}]},
    "binary_cross_entropy": {"layers": [{"type": "dense", "units": 8, "activation": "relu"},
                                        {"type": "dense", "units": 1, "activation": "sigmoid"}]},
}
COMMON = {"optimizer": {"type": "adam", "learning_rate": 0.05}, "epochs": 5, "batch_size": 8, "seed": 0}


def table(n: int, seed: int, regression: bool = False) -> bytes:
    rng = np.random.default_rng(seed)
    x, z = rng.normal(size=n), rng.normal(size=n)
    target = [f"{2 * a - b + 0.3 * c:.4f}" for a, b, c in zip(x, z, rng.normal(size=n))] if regression else \
        ["yes" if a + 0.5 * b > 0 else "no" for a, b in zip(x, z)]
    return ("x,z,target\n" + "".join(f"{a:.4f},{b:.4f},{t}\n" for a, b, t in zip(x, z, target))).encode()


pytestmark = pytest.mark.usefixtures("fresh_model_cache")


def train(client, auth, settings, loss: str, regression: bool = False) -> str:  # noqa: ANN001
    raw = table(60, seed=1, regression=regression)
    upload(client, auth, raw)
    spec = {**COMMON, "loss": loss, "layers": [{"type": "dense", "units": 8, "activation": "relu"},
                                               {"type": "dense", "units": 1}]} if regression else \
        {**COMMON, "loss": loss, **CLASSIFIERS[loss]}
    return store_trained_model(settings, "alice", raw, "csv", target="target", spec=spec)


def held_out(client, auth, n: int = 40, regression: bool = False) -> tuple[str, list[list[float]], list]:  # noqa: ANN001
    """(dataset id, feature rows, targets as uploaded) of fresh rows."""
    raw = table(n, seed=7, regression=regression)
    lines = [line.split(",") for line in raw.decode().splitlines()[1:]]
    dataset_id = upload(client, auth, raw, filename="holdout.csv").get_json()["id"]
    targets = [float(t) if regression else t for *_features, t in lines]
    return dataset_id, [[float(a), float(b)] for a, b, _t in lines], targets


def evaluate(client, auth, model_id: str, **body):  # noqa: ANN001, ANN003, ANN201
    return client.post(f"/v1/models/{model_id}/evaluations", headers=auth, json=body)


@pytest.mark.parametrize("loss", ["cross_entropy", "binary_cross_entropy"])
def test_classification_metrics_match_the_models_predictions(client, auth, settings, loss) -> None:  # noqa: ANN001
    model_id = train(client, auth, settings, loss)
    dataset_id, rows, truth = held_out(client, auth)
    response = evaluate(client, auth, model_id, dataset_id=dataset_id)
    assert response.status_code == 200, response.get_json()
    result = response.get_json()
    predicted = client.post(f"/v1/models/{model_id}/predictions", headers=auth, json={"instances": rows}).get_json()
    labels = result["confusion_matrix"]["labels"]
    assert labels == ["no", "yes"] and result["n"] == 40 and result["loss_name"] == loss
    expected = [[sum(t == a and p == b for t, p in zip(truth, predicted["predictions"])) for b in labels] for a in labels]
    assert result["confusion_matrix"]["matrix"] == expected
    assert result["accuracy"] == pytest.approx(np.mean(np.array(truth) == np.array(predicted["predictions"])))
    true_probability = [probs[labels.index(t)] for probs, t in zip(predicted["probabilities"], truth)]
    assert result["loss"] == pytest.approx(-np.mean(np.log(true_probability)), rel=1e-4)
    assert "r2" not in result and "mae" not in result
    same = evaluate(client, auth, model_id, instances=rows, targets=truth).get_json()
    assert {**same, "dataset_id": dataset_id} == result


def test_regression_metrics_match_the_models_predictions(client, auth, settings) -> None:  # noqa: ANN001
    model_id = train(client, auth, settings, "mse", regression=True)
    dataset_id, rows, truth = held_out(client, auth, regression=True)
    result = evaluate(client, auth, model_id, dataset_id=dataset_id).get_json()
    predicted = np.array(client.post(f"/v1/models/{model_id}/predictions", headers=auth,
                                     json={"instances": rows}).get_json()["predictions"])
    y = np.array(truth)
    errors = predicted - y
    assert result["task"] == "regression" and result["n"] == 40 and "accuracy" not in result
    assert result["mae"] == pytest.approx(np.abs(errors).mean(), rel=1e-5)
    assert result["rmse"] == pytest.approx(np.sqrt((errors ** 2).mean()), rel=1e-5)
    assert result["loss"] == pytest.approx((errors ** 2).mean(), rel=1e-4)
    assert result["r2"] == pytest.approx(1 - (errors ** 2).sum() / ((y - y.mean()) ** 2).sum(), rel=1e-5)


@pytest.fixture
def classifier(client, auth, settings) -> str:  # noqa: ANN001
    return train(client, auth, settings, "cross_entropy")


@pytest.mark.parametrize(("csv", "needles"), [
    (b"x,z\n1,2\n3,4\n", ["'target'", "true labels"]),
    (b"x,target\n1,yes\n3,no\n", ["missing feature", "z"]),
    (b"x,z,target\n1,2,yes\n3,4,maybe\n", ["maybe", "not among the model's classes"]),
])
def test_datasets_that_cannot_be_scored_are_422(client, auth, classifier, csv, needles) -> None:  # noqa: ANN001
    dataset_id = upload(client, auth, csv, filename="bad.csv").get_json()["id"]
    assert_problem(evaluate(client, auth, classifier, dataset_id=dataset_id), 422, *needles)


def test_row_limits(client, auth, classifier) -> None:  # noqa: ANN001
    """The app under test has MAX_PREDICTION_ROWS = 50."""
    dataset_id = held_out(client, auth, n=51)[0]
    assert_problem(evaluate(client, auth, classifier, dataset_id=dataset_id), 422, "MAX_PREDICTION_ROWS", "51")
    rows = [[0.0, 0.0]] * 51
    too_many = assert_problem(evaluate(client, auth, classifier, instances=rows, targets=["yes"] * 51), 413,
                              "MAX_PREDICTION_ROWS")
    assert too_many["max_rows"] == 50


@pytest.mark.parametrize(("body", "needle"), [
    ({"instances": [[1, 2]]}, "instances and targets"),
    ({"instances": [[1, 2], [3, 4]], "targets": ["yes"]}, "one target per instance"),
    ({"dataset_id": "x", "instances": [[1, 2]], "targets": ["no"]}, "either dataset_id"),
    ({}, "either dataset_id"),
    ({"instances": [[1, 2]], "targets": [None]}, "missing label"),
    ({"instances": [[1, "a"]], "targets": ["no"]}, "numeric"),
])
def test_bad_bodies_are_422(client, auth, classifier, body, needle) -> None:  # noqa: ANN001
    assert_problem(evaluate(client, auth, classifier, **body), 422, needle)


def test_another_tenants_model_and_dataset(client, auth, auth_b, classifier) -> None:  # noqa: ANN001
    dataset_id = held_out(client, auth)[0]
    assert_problem(evaluate(client, auth_b, classifier, dataset_id=dataset_id), 404, "not found")
    bobs = upload(client, auth_b, table(10, seed=3), filename="bob.csv").get_json()["id"]
    assert_problem(evaluate(client, auth, classifier, dataset_id=bobs), 422, f"dataset {bobs} not found")


@pytest.mark.parametrize(("targets", "needle"), [(["high", "low"], "must be numbers"), ([1.0, None], "finite"),
                                                 ([[1.0, 2.0], [3.0, 4.0]], "1 finite number")])
def test_regression_targets_must_be_one_finite_number_each(client, auth, settings, targets, needle) -> None:  # noqa: ANN001
    model_id = train(client, auth, settings, "mse", regression=True)
    assert_problem(evaluate(client, auth, model_id, instances=[[0.1, 0.2], [0.3, 0.4]], targets=targets), 422, needle)


@pytest.mark.parametrize("targets", [[0.5, 1e20], [0.5, 1e39], [0.5, -1e300]])
def test_regression_targets_that_overflow_the_loss_are_named(client, auth, settings, targets) -> None:  # noqa: ANN001
    """Finite outputs but a loss beyond float32 (1e20 squared): the 422 names the targets' row, not the inputs."""
    model_id = train(client, auth, settings, "mse", regression=True)
    problem = assert_problem(evaluate(client, auth, model_id, instances=[[0.1, 0.2], [0.3, 0.4]], targets=targets),
                             422, "overflow float32", "row 1", "units")
    assert problem["errors"][0]["loc"] == ["body", "targets", 1]
    assert "inputs" not in problem["detail"]
