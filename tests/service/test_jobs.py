"""POST/GET /v1/jobs, epochs and cancel: validation listing every problem, commit before
publish, publish failures, ordering, NaN handling, cancel in each state."""
from __future__ import annotations

import math

import pytest

from bps.db import session_scope
from bps.models import Epoch, Job
from tests.service.helpers import IRIS_LIKE_CSV, SMALL_SPEC, assert_problem, npz_bytes, upload


@pytest.fixture
def dataset_id(client, auth) -> str:  # noqa: ANN001
    return upload(client, auth, IRIS_LIKE_CSV).get_json()["id"]


def submit(client, auth, **body):  # noqa: ANN001, ANN003, ANN201
    return client.post("/v1/jobs", json=body, headers=auth)


def test_submit_commits_then_publishes(client, auth, dataset_id, published) -> None:  # noqa: ANN001
    response = submit(client, auth, dataset_id=dataset_id, target="species", spec=SMALL_SPEC)
    assert response.status_code == 202, response.get_json()
    job = response.get_json()
    assert response.headers["Location"] == f"/v1/jobs/{job['id']}"
    assert published == [(job["id"], "cpu")]
    assert job["status"] == "queued" and job["epochs"] == 3 and job["progress"] == 0
    assert job["features"] == ["sepal", "petal", "colour"] and job["task"] == "classification"  # the default, resolved
    assert job["spec"]["batch_size"] == 8 and job["spec"]["layers"][-1]["units"] == 2  # normalised, filled in
    assert client.get(job["id"].join(["/v1/jobs/", ""]), headers=auth).get_json()["id"] == job["id"]


def register_worker(settings, device: str) -> None:  # noqa: ANN001
    from bps.models import WorkerRecord

    with session_scope(settings.database_url) as session:
        session.add(WorkerRecord(id=f"fake-{device}@host", device=device, queues=[device]))


def test_gpu_device_is_refused_while_no_gpu_worker_is_alive(client, auth, dataset_id, published) -> None:  # noqa: ANN001
    response = submit(client, auth, dataset_id=dataset_id, target="species", spec={**SMALL_SPEC, "device": "gpu"})
    assert_problem(response, 422, "no GPU worker")
    assert published == []


@pytest.mark.parametrize("device", ["gpu", "auto"])
def test_gpu_and_auto_go_to_the_gpu_queue_while_a_gpu_worker_is_alive(client, auth, dataset_id, published, settings,
                                                                      device) -> None:  # noqa: ANN001
    register_worker(settings, "cpu")
    submit(client, auth, dataset_id=dataset_id, target="species", spec={**SMALL_SPEC, "device": "auto"})
    register_worker(settings, "gpu")
    submit(client, auth, dataset_id=dataset_id, target="species", spec={**SMALL_SPEC, "device": device})
    assert [queue for _, queue in published] == ["cpu", "gpu"]


def test_a_missing_dataset_and_a_bad_spec_are_listed_together(client, auth, published) -> None:  # noqa: ANN001
    spec = {"layers": [{"type": "conv2d"}], "loss": "foo", "epochs": -1}
    body = assert_problem(submit(client, auth, dataset_id="nope", spec=spec), 422, "dataset nope not found")
    locs = [tuple(e["loc"]) for e in body["errors"]]
    assert ("body", "dataset_id") in locs and len(locs) >= 3, locs
    assert any("epochs" in loc for loc in locs) and any("loss" in loc for loc in locs), locs


def test_broker_failure_still_answers_202_and_keeps_the_job_queued(client, auth, dataset_id, monkeypatch) -> None:  # noqa: ANN001
    import worker.queue

    def broken(*_args) -> None:  # noqa: ANN002
        raise ConnectionError("broker down")

    monkeypatch.setattr(worker.queue, "publish_job", broken)
    response = submit(client, auth, dataset_id=dataset_id, target="species", spec=SMALL_SPEC)
    assert response.status_code == 202
    assert client.get(response.headers["Location"], headers=auth).get_json()["status"] == "queued"


def test_every_problem_is_listed_and_nothing_is_queued(client, auth, dataset_id, published, settings) -> None:  # noqa: ANN001
    bad_spec = {**SMALL_SPEC, "epochs": 0, "layers": [{"type": "dense", "units": -1}, {"type": "dense"}]}
    response = submit(client, auth, dataset_id=dataset_id, target="nope", features=["sepal", "ghost"],
                      spec=bad_spec)
    body = assert_problem(response, 422)
    locs = [tuple(e["loc"]) for e in body["errors"]]
    assert ("body", "target") in locs and ("body", "features") in locs
    assert any(loc[:2] == ("spec", "epochs") for loc in locs) and any(loc[:2] == ("spec", "layers") for loc in locs)
    assert published == []
    with session_scope(settings.database_url) as session:
        assert session.query(Job).count() == 0


@pytest.mark.parametrize(("body", "needles"), [
    ({"target": "species", "input_shape": [3, 3]}, ["input_shape", "9", "4"]),
    ({"target": "species", "spec": {**SMALL_SPEC, "loss": "mse"}}, ["species", "strings"]),
    ({"target": "sepal", "spec": SMALL_SPEC}, ["non-integer", "sepal"]),
    ({"target": "species", "spec": {**SMALL_SPEC, "epochs": 10**9}}, ["epochs"]),
    ({"target": "species", "spec": {**SMALL_SPEC, "layers": [{"type": "dense", "units": 3, "activation": "softmax"}]}},
     ["3", "2"]),
    ({"target": "species", "spec": {**SMALL_SPEC, "batch_size": 10**9}}, ["batch_size"]),
])
def test_job_is_checked_against_the_dataset(client, auth, dataset_id, published, body, needles) -> None:  # noqa: ANN001
    request = {"dataset_id": dataset_id, "spec": SMALL_SPEC, **body}
    assert_problem(client.post("/v1/jobs", json=request, headers=auth), 422, *needles)
    assert published == []


def test_work_budget_and_queue_limits(client, auth, dataset_id, published, app) -> None:  # noqa: ANN001
    from dataclasses import replace

    app.config["BPS_SETTINGS"] = replace(app.config["BPS_SETTINGS"], max_work_rows=30 * 2, max_queued_jobs_per_tenant=1)
    assert_problem(submit(client, auth, dataset_id=dataset_id, target="species", spec=SMALL_SPEC), 422, "MAX_WORK_ROWS")
    spec = {**SMALL_SPEC, "epochs": 1}
    assert submit(client, auth, dataset_id=dataset_id, target="species", spec=spec).status_code == 202
    quota = submit(client, auth, dataset_id=dataset_id, target="species", spec=spec)
    assert_problem(quota, 429, "MAX_QUEUED_JOBS_PER_TENANT")
    assert int(quota.headers["Retry-After"]) > 0


def test_non_finite_features_need_imputation(client, auth, published) -> None:  # noqa: ANN001
    raw = b"a,b,label\n1,2,x\n2,,y\n3,inf,x\n4,5,y\n"
    dataset_id = upload(client, auth, raw).get_json()["id"]
    body = {"dataset_id": dataset_id, "target": "label", "spec": SMALL_SPEC}
    problem = assert_problem(client.post("/v1/jobs", json=body, headers=auth), 422, "'b'", "impute")
    assert ["dataset", "b"] in [e["loc"] for e in problem["errors"]]
    accepted = client.post("/v1/jobs", json={**body, "impute": "median"}, headers=auth)
    assert accepted.status_code == 202 and accepted.get_json()["impute"] == "median"


def test_npz_jobs_and_their_checks(client, auth, published) -> None:  # noqa: ANN001
    import numpy as np

    raw = npz_bytes(X=np.random.default_rng(0).normal(size=(10, 1, 4, 4)), y=np.arange(10) % 3)
    dataset_id = upload(client, auth, raw, "d.npz").get_json()["id"]
    spec = {**SMALL_SPEC, "layers": [{"type": "flatten"}, *SMALL_SPEC["layers"]]}
    job = submit(client, auth, dataset_id=dataset_id, spec=spec).get_json()
    assert job["spec"]["layers"][-1]["units"] == 3
    assert_problem(submit(client, auth, dataset_id=dataset_id, target="y", spec=spec), 422, "npz")
    assert_problem(submit(client, auth, dataset_id=dataset_id, input_shape=[5, 5], spec=spec), 422, "input_shape")


def test_unknown_dataset_and_unknown_fields(client, auth, dataset_id, published) -> None:  # noqa: ANN001
    assert_problem(submit(client, auth, dataset_id="missing", target="species", spec=SMALL_SPEC), 422, "dataset")
    assert_problem(submit(client, auth, dataset_id=dataset_id, target="species", spec=SMALL_SPEC, colour="red"),
                   422, "unknown field 'colour'")


def _set(settings, job_id: str, **values) -> None:  # noqa: ANN001, ANN003
    with session_scope(settings.database_url) as session:
        job = session.get(Job, job_id)
        for name, value in values.items():
            setattr(job, name, value)


def test_list_newest_first_and_by_status(client, auth, dataset_id, published, settings) -> None:  # noqa: ANN001
    ids = [submit(client, auth, dataset_id=dataset_id, target="species", spec=SMALL_SPEC).get_json()["id"]
           for _ in range(3)]
    _set(settings, ids[0], status="failed", error="it broke")
    assert [j["id"] for j in client.get("/v1/jobs", headers=auth).get_json()] == ids[::-1]
    assert [j["id"] for j in client.get("/v1/jobs?status=failed", headers=auth).get_json()] == [ids[0]]
    assert_problem(client.get("/v1/jobs?status=bogus", headers=auth), 400, "status")


def test_epochs_in_order_with_non_finite_as_null(client, auth, dataset_id, published, settings) -> None:  # noqa: ANN001
    job_id = submit(client, auth, dataset_id=dataset_id, target="species", spec=SMALL_SPEC).get_json()["id"]
    with session_scope(settings.database_url) as session:
        for epoch, loss in ((2, math.inf), (1, 0.5)):
            session.add(Epoch(job_id=job_id, epoch=epoch, loss=loss, grad_norms={"0.weight": math.nan, "0.bias": 1.0}))
    epochs = client.get(f"/v1/jobs/{job_id}/epochs", headers=auth).get_json()["epochs"]
    assert [e["epoch"] for e in epochs] == [1, 2]
    assert epochs[0]["loss"] == 0.5 and epochs[1]["loss"] is None
    assert epochs[0]["grad_norms"] == {"0.weight": None, "0.bias": 1.0}


def test_cancel_in_each_state(client, auth, dataset_id, published, settings) -> None:  # noqa: ANN001
    queued, running, done = (submit(client, auth, dataset_id=dataset_id, target="species", spec=SMALL_SPEC)
                             .get_json()["id"] for _ in range(3))
    _set(settings, running, status="running")
    _set(settings, done, status="succeeded")
    response = client.post(f"/v1/jobs/{queued}/cancel", headers=auth)
    assert response.status_code == 202 and response.get_json()["status"] == "cancelled"
    assert response.get_json()["finished_at"] is not None
    response = client.post(f"/v1/jobs/{running}/cancel", headers=auth)
    assert response.status_code == 202
    assert response.get_json()["status"] == "running" and response.get_json()["cancel_requested"] is True
    assert_problem(client.post(f"/v1/jobs/{done}/cancel", headers=auth), 409, "succeeded")
    assert_problem(client.post(f"/v1/jobs/{queued}/cancel", headers=auth), 409, "cancelled")
