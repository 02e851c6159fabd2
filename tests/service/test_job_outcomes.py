"""What polling a job tells, through the HTTP API with the worker's runner in-process (a thread
where the job must be watched while it runs): progress and an ETA within an epoch, why a job
stopped, the latest and the served epoch's metrics, and a partial model kept from a cancelled job."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from tests.faults.harness import wait_for
from tests.service.helpers import upload

LAYERS = [{"type": "dense", "units": 8, "activation": "relu"}, {"type": "dense", "activation": "softmax"}]
SPEC = {"layers": LAYERS, "loss": "cross_entropy", "optimizer": {"type": "adam", "learning_rate": 0.05}, "epochs": 30,
        "batch_size": 16, "seed": 0}


def blobs_csv(n_per_class: int) -> bytes:
    """Three 2-D blobs, rows sorted by label (so validation "last" holds one class alone)."""
    rng = np.random.default_rng(0)
    rows = [f"{x:.3f},{y:.3f},{label}" for k, label in enumerate(("ant", "bee", "cat"))
            for x, y in rng.normal(scale=0.6, size=(n_per_class, 2)) + [3.0 * k, -2.0 * k]]
    return ("a,b,label\n" + "\n".join(rows) + "\n").encode()


@pytest.fixture
def dataset_id(client, auth) -> str:  # noqa: ANN001
    return upload(client, auth, blobs_csv(40)).get_json()["id"]


def submit(client, auth, dataset_id: str, **spec) -> str:  # noqa: ANN001, ANN003
    response = client.post("/v1/jobs", json={"dataset_id": dataset_id, "target": "label", "spec": {**SPEC, **spec}},
                           headers=auth)
    assert response.status_code == 202, response.get_json()
    return response.get_json()["id"]


def get_job(client, auth, job_id: str) -> dict:  # noqa: ANN001
    return client.get(f"/v1/jobs/{job_id}", headers=auth).get_json()


def run_in_thread(settings, job_id: str) -> threading.Thread:  # noqa: ANN001
    from worker.runner import run_job

    runner = threading.Thread(target=run_job, args=(job_id,), kwargs={"settings": settings}, daemon=True)
    runner.start()
    return runner


def test_a_completed_job_says_so_and_shows_no_eta(client, auth, settings, dataset_id, published) -> None:  # noqa: ANN001
    from worker.runner import run_job

    job_id = submit(client, auth, dataset_id, epochs=3, validation_split=0.2)
    assert "eta_s" not in get_job(client, auth, job_id)  # queued: unknown, omitted rather than null
    run_job(job_id, settings=settings)
    job = get_job(client, auth, job_id)
    assert (job["status"], job["stop_reason"], job["stop_detail"]) == ("succeeded", "completed", "all 3 epochs trained")
    assert "eta_s" not in job and job["progress"] == 1.0
    assert job["best_metrics"] == {**job["metrics"], "epoch": 3}  # no restore_best: the last epoch serves


def test_early_stopping_says_why_and_shows_latest_and_served_metrics(client, auth, settings, dataset_id,
                                                                    published) -> None:  # noqa: ANN001
    from worker.runner import run_job

    early_stopping = {"monitor": "val_loss", "patience": 2, "restore_best": True}
    job_id = submit(client, auth, dataset_id, validation_split=0.25, validation="last", early_stopping=early_stopping,
                    optimizer={"type": "adam", "learning_rate": 0.5})
    run_job(job_id, settings=settings)
    job = get_job(client, auth, job_id)
    assert (job["status"], job["stop_reason"]) == ("succeeded", "early_stopping"), job["error"]
    best = job["best_metrics"]["epoch"]
    assert best < job["epoch"] and f"epoch {best}" in job["stop_detail"] and "val_loss" in job["stop_detail"]
    epochs = client.get(f"/v1/jobs/{job_id}/epochs", headers=auth).get_json()["epochs"]
    assert job["metrics"]["val_loss"] == epochs[-1]["val_loss"]  # metrics: the latest epoch
    assert job["best_metrics"]["val_loss"] == epochs[best - 1]["val_loss"] == min(e["val_loss"] for e in epochs)
    model = client.get(f"/v1/models/{job['model_id']}", headers=auth).get_json()
    assert model["metrics"] == job["best_metrics"] and model["partial"] is False


def test_progress_and_eta_move_within_a_long_first_epoch(client, auth, settings, published) -> None:  # noqa: ANN001
    dataset_id = upload(client, auth, blobs_csv(1000)).get_json()["id"]
    wide = [{"type": "dense", "units": 512, "activation": "relu"}, {"type": "dense", "units": 512, "activation": "relu"},
            {"type": "dense", "activation": "softmax"}]
    job_id = submit(client, auth, dataset_id, layers=wide, batch_size=1, epochs=2)
    runner = run_in_thread(settings, job_id)
    try:
        job = wait_for(lambda: (j := get_job(client, auth, job_id))["progress"] > 0 and "eta_s" in j and j, 60,
                   "progress within the first epoch")
        assert job["epoch"] == 0 and 0 < job["progress"] < 0.5 and job["eta_s"] > 0
        later = wait_for(lambda: (j := get_job(client, auth, job_id))["progress"] > job["progress"] and j, 30,
                     "progress to advance")
        assert later["epoch"] == 0 or later["progress"] >= 0.5
    finally:
        client.post(f"/v1/jobs/{job_id}/cancel", headers=auth)
        runner.join(timeout=30)
    job = get_job(client, auth, job_id)
    assert (job["status"], job["stop_reason"], job["model_id"]) == ("cancelled", "cancelled", None)  # no epoch ended


def test_a_cancelled_job_keeps_its_trained_epochs_as_a_partial_model(client, auth, settings, dataset_id,
                                                                     published) -> None:  # noqa: ANN001
    job_id = submit(client, auth, dataset_id, epochs=5000, batch_size=4, validation_split=0.2)
    runner = run_in_thread(settings, job_id)
    wait_for(lambda: get_job(client, auth, job_id)["epoch"] >= 3, 60, "epoch 3")
    assert client.post(f"/v1/jobs/{job_id}/cancel", headers=auth).status_code == 202
    runner.join(timeout=30)
    job = get_job(client, auth, job_id)
    assert (job["status"], job["stop_reason"]) == ("cancelled", "cancelled") and job["model_id"]
    assert "partial model" in job["stop_detail"]
    model = client.get(f"/v1/models/{job['model_id']}", headers=auth).get_json()
    assert (model["partial"], model["partial_reason"]) == (True, "cancelled")
    listed = {m["id"]: m for m in client.get("/v1/models", headers=auth).get_json()}
    assert (listed[model["id"]]["partial"], listed[model["id"]]["partial_reason"]) == (True, "cancelled")
    assert model["metrics"]["epoch"] == job["epoch"] == job["best_metrics"]["epoch"]
    response = client.post(f"/v1/models/{job['model_id']}/predictions", json={"instances": [[0.0, 0.0], [6.0, -4.0]]},
                           headers=auth)
    assert response.status_code == 201 and response.get_json()["predictions"] == ["ant", "cat"]


def test_a_diverging_job_says_so_and_warns_of_non_finite_gradients(client, auth, settings, dataset_id,
                                                                    published) -> None:  # noqa: ANN001
    from worker.runner import run_job

    job_id = submit(client, auth, dataset_id, optimizer={"type": "sgd", "learning_rate": 1e12})
    run_job(job_id, settings=settings)
    job = get_job(client, auth, job_id)
    assert (job["status"], job["stop_reason"], job["model_id"]) == ("failed", "diverged", None)
    assert job["error"].startswith("loss became NaN at epoch")
    exploding = [w for w in job["warnings"] if w.startswith("exploding gradients")]
    assert any("gradient norm non-finite (inf/NaN)" in w for w in exploding)
    assert not any("None" in w for w in job["warnings"])
