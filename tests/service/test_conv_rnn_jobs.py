"""Convolutional and recurrent jobs through the API: `input_shape` reshapes flat CSV pixel
columns for a CNN, an .npz of sequences trains an LSTM, and impossible shapes are refused
with 422 before anything is queued."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from sklearn.datasets import load_digits

from tests.service.helpers import assert_problem, npz_bytes, upload


@pytest.fixture
def app(settings):  # noqa: ANN001, ANN201  (bigger limits than the API tests' default app)
    from service.app import create_app

    return create_app(replace(settings, max_upload_bytes=4 * 1024 * 1024, max_prediction_rows=2000))


def run_to_success(client, auth, settings, body):  # noqa: ANN001, ANN201
    from worker.runner import run_job

    response = client.post("/v1/jobs", json=body, headers=auth)
    assert response.status_code == 202, response.get_json()
    job_id = response.get_json()["id"]
    run_job(job_id, settings=settings)
    job = client.get(f"/v1/jobs/{job_id}", headers=auth).get_json()
    assert job["status"] == "succeeded", job["error"]
    return job


def test_cnn_trains_on_flat_pixel_columns_of_a_csv(client, auth, settings, published) -> None:  # noqa: ANN001
    digits = load_digits()
    order = np.random.default_rng(0).permutation(len(digits.target))
    train, held_out = order[:1200], order[1200:]
    header = ",".join(f"p{k}" for k in range(64)) + ",digit\n"
    rows = "".join(",".join(str(int(v)) for v in digits.data[i]) + f",d{digits.target[i]}\n" for i in train)
    dataset_id = upload(client, auth, (header + rows).encode(), "digits.csv").get_json()["id"]
    spec = {"layers": [{"type": "conv2d", "filters": 8, "kernel_size": 3, "padding": "same", "activation": "relu"},
                       {"type": "maxpool2d", "pool_size": 2}, {"type": "flatten"},
                       {"type": "dense", "activation": "softmax"}],
            "loss": "cross_entropy", "optimizer": {"type": "adam", "learning_rate": 0.01}, "epochs": 8}
    job = run_to_success(client, auth, settings,
                         {"dataset_id": dataset_id, "target": "digit", "input_shape": [1, 8, 8], "spec": spec})
    assert job["spec"]["layers"][-1]["units"] == 10
    response = client.post(f"/v1/models/{job['model_id']}/predictions",
                           json={"instances": digits.data[held_out].tolist()}, headers=auth)
    assert response.status_code == 201, response.get_json()
    predicted = response.get_json()["predictions"]
    accuracy = np.mean([p == f"d{t}" for p, t in zip(predicted, digits.target[held_out], strict=True)])
    assert accuracy >= 0.93, accuracy


def noisy_waves(n: int, steps: int = 24, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(n, steps, 1) sine waves of one of three frequencies, and which one (n,)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    t = np.arange(steps)
    phase = rng.uniform(0, 2 * np.pi, (n, 1))
    waves = np.sin(phase + t * (0.3 + 0.5 * labels)[:, None]) + 0.1 * rng.normal(size=(n, steps))
    return waves[:, :, None].astype(np.float32), labels


def test_lstm_trains_on_an_npz_of_sequences(client, auth, settings, published) -> None:  # noqa: ANN001
    X, y = noisy_waves(400)
    dataset_id = upload(client, auth, npz_bytes(X=X, y=y), "waves.npz").get_json()["id"]
    spec = {"layers": [{"type": "lstm", "units": 32}, {"type": "dense", "activation": "softmax"}],
            "loss": "cross_entropy", "optimizer": {"type": "adam", "learning_rate": 0.01}, "epochs": 20,
            "batch_size": 16, "gradient_clip_norm": 1.0}
    job = run_to_success(client, auth, settings, {"dataset_id": dataset_id, "spec": spec})
    X_test, y_test = noisy_waves(200, seed=1)
    response = client.post(f"/v1/models/{job['model_id']}/predictions", json={"instances": X_test.tolist()},
                           headers=auth)
    assert response.status_code == 201, response.get_json()
    accuracy = np.mean(np.asarray(response.get_json()["predictions"]) == y_test)
    assert accuracy >= 0.9, accuracy


IMPOSSIBLE = [
    ([1, 8, 8], [{"type": "conv2d", "filters": 4, "kernel_size": 9}], "kernel"),
    ([1, 8, 8], [{"type": "maxpool2d", "pool_size": 2}, {"type": "maxpool2d", "pool_size": 2},
                 {"type": "maxpool2d", "pool_size": 2}, {"type": "maxpool2d", "pool_size": 2}], "pool"),
    ([64], [{"type": "lstm", "units": 4}], "(t, f)"),
]


@pytest.mark.parametrize(("input_shape", "layers", "needle"), IMPOSSIBLE)
def test_impossible_shapes_are_refused_before_queueing(client, auth, published, input_shape, layers,
                                                       needle) -> None:  # noqa: ANN001
    header = ",".join(f"p{k}" for k in range(64)) + ",label\n"
    rows = "".join(",".join(str((i + k) % 5) for k in range(64)) + f",{i % 2}\n" for i in range(20))
    dataset_id = upload(client, auth, (header + rows).encode()).get_json()["id"]
    spec = {"layers": [*layers, {"type": "flatten"}, {"type": "dense", "activation": "softmax"}],
            "loss": "cross_entropy"}
    response = client.post("/v1/jobs", json={"dataset_id": dataset_id, "target": "label",
                                             "input_shape": input_shape, "spec": spec}, headers=auth)
    body = assert_problem(response, 422, needle)
    assert any(e["loc"][:3] == ["spec", "layers", 0] or e["loc"][:4] == ["body", "spec", "layers", 0]
               or "layers" in e["loc"] for e in body["errors"]), body["errors"]
    assert published == []
    assert client.get("/v1/jobs", headers=auth).get_json() == []
