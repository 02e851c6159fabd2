"""validation_split and validation through the HTTP API with the worker's runner in-process: a
split that leaves no training or validation row is a 422 at submission; a label-sorted CSV is
validated on a stratified shuffled split by default, and `"validation": "last"` warns when its
validation rows hold a class the training rows lack."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_iris

from tests.service.helpers import assert_problem, upload

SPEC = {"layers": [{"type": "dense", "units": 16, "activation": "relu"}, {"type": "dense", "activation": "softmax"}],
        "loss": "cross_entropy", "optimizer": {"type": "adam", "learning_rate": 0.02}, "epochs": 40,
        "batch_size": 16, "seed": 0}


def sorted_iris_csv() -> bytes:
    """The 150 iris rows, sorted by species (as the file usually comes)."""
    iris = load_iris()
    names = np.asarray(iris.target_names)[iris.target]
    order = np.argsort(iris.target, kind="stable")
    rows = [",".join(f"{v:g}" for v in iris.data[i]) + f",{names[i]}" for i in order]
    return ("sepal_length,sepal_width,petal_length,petal_width,species\n" + "\n".join(rows) + "\n").encode()


@pytest.fixture
def iris_id(client, auth) -> str:  # noqa: ANN001
    return upload(client, auth, sorted_iris_csv(), filename="iris.csv").get_json()["id"]


def submit(client, auth, dataset_id: str, **spec):  # noqa: ANN001, ANN003, ANN201
    return client.post("/v1/jobs", json={"dataset_id": dataset_id, "target": "species", "spec": {**SPEC, **spec}},
                       headers=auth)


def train(client, auth, settings, dataset_id: str, **spec) -> dict:  # noqa: ANN001, ANN003
    from worker.runner import run_job

    response = submit(client, auth, dataset_id, **spec)
    assert response.status_code == 202, response.get_json()
    run_job(response.get_json()["id"], settings=settings)
    return client.get(f"/v1/jobs/{response.get_json()['id']}", headers=auth).get_json()


@pytest.mark.parametrize("split", [0.999, 0.995])
def test_a_split_leaving_no_training_row_is_a_422_naming_the_field(client, auth, iris_id, published, split) -> None:  # noqa: ANN001
    body = assert_problem(submit(client, auth, iris_id, validation_split=split), 422, "validation_split", "150 rows")
    assert ["spec", "validation_split"] in [e["loc"] for e in body["errors"]]
    assert published == []


def test_the_normalised_spec_names_the_validation_default(client, auth, iris_id, published) -> None:  # noqa: ANN001
    assert submit(client, auth, iris_id).get_json()["spec"]["validation"] == "shuffle"
    assert submit(client, auth, iris_id, validation="last").get_json()["spec"]["validation"] == "last"
    assert_problem(submit(client, auth, iris_id, validation="first"), 422, "validation")


def test_a_label_sorted_csv_validates_on_every_class_by_default(client, auth, settings, iris_id, published) -> None:  # noqa: ANN001
    job = train(client, auth, settings, iris_id, validation_split=0.34)
    assert job["status"] == "succeeded", job["error"]
    assert job["metrics"]["val_accuracy"] > 0.85
    assert not any("validation rows hold" in w for w in job["warnings"])


def test_validation_last_warns_that_training_lacks_a_class(client, auth, settings, iris_id, published) -> None:  # noqa: ANN001
    job = train(client, auth, settings, iris_id, validation_split=0.34, validation="last")
    assert job["status"] == "succeeded", job["error"]
    assert job["metrics"]["val_accuracy"] < 0.5  # virginica is only in the validation rows
    assert any("validation rows hold" in w and "virginica" in w for w in job["warnings"]), job["warnings"]
