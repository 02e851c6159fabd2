"""Upload -> submit -> the worker's runner (in-process, no broker) -> epochs -> predict:
the API's pieces work with the real training path, for both classification losses."""
from __future__ import annotations

import numpy as np
import pytest

from tests.service.helpers import upload


@pytest.mark.parametrize(("loss", "activation", "labels"), [
    ("cross_entropy", "softmax", ("lo", "hi")), ("binary_cross_entropy", "sigmoid", (0, 1))])
def test_submitted_job_trains_and_predicts_labels_as_uploaded(client, auth, settings, published, loss, activation,
                                                              labels) -> None:  # noqa: ANN001
    from worker.runner import run_job

    x = np.random.default_rng(0).normal(size=(200, 2))
    rows = "".join(f"{a:.3f},{b:.3f},{labels[int(a + b > 0)]}\n" for a, b in x)
    dataset_id = upload(client, auth, ("a,b,label\n" + rows).encode()).get_json()["id"]
    spec = {"layers": [{"type": "dense", "units": 8, "activation": "relu"}, {"type": "dense", "activation": activation}],
            "loss": loss, "epochs": 20, "optimizer": {"type": "adam", "learning_rate": 0.05}}
    job_id = client.post("/v1/jobs", json={"dataset_id": dataset_id, "target": "label", "spec": spec},
                         headers=auth).get_json()["id"]
    run_job(job_id, settings=settings)
    job = client.get(f"/v1/jobs/{job_id}", headers=auth).get_json()
    assert job["status"] == "succeeded" and job["progress"] == 1.0, job["error"]
    epochs = client.get(f"/v1/jobs/{job_id}/epochs", headers=auth).get_json()["epochs"]
    assert [e["epoch"] for e in epochs] == list(range(1, 21)) and epochs[-1]["loss"] < epochs[0]["loss"]
    model = client.get(f"/v1/models/{job['model_id']}", headers=auth).get_json()
    assert model["classes"] == sorted(labels)
    body = client.post(f"/v1/models/{job['model_id']}/predictions", json={"instances": [[2, 2], [-2, -2]]},
                       headers=auth).get_json()
    assert body["predictions"] == [labels[1], labels[0]]
