"""DELETE /v1/jobs/{id} (409 while queued or running; a finished job goes with its epochs, its
model stays) and GET /v1/jobs/{id}/epochs?since=N (only the epochs after N)."""
from __future__ import annotations

import pytest
from sqlalchemy import func, select, update

from bps.db import session_scope
from bps.models import Checkpoint, Epoch, Job, Model
from tests.service.helpers import IRIS_LIKE_CSV, SMALL_SPEC, assert_problem, store_trained_model, upload

CSV = ("x,label\n" + "".join(f"{i - 10},{'low' if i < 10 else 'high'}\n" for i in range(20))).encode()


@pytest.fixture
def finished_job(client, auth, settings) -> tuple[str, str]:  # noqa: ANN001
    """(job id, model id) of a succeeded job with 5 epochs and a checkpoint."""
    upload(client, auth, CSV)
    model_id = store_trained_model(settings, "alice", CSV, "csv", target="label", spec=SMALL_SPEC)
    with session_scope(settings.database_url) as session:
        job_id = session.get(Model, model_id).job_id
        session.add_all([Epoch(job_id=job_id, epoch=n, loss=1.0 / n, grad_norms={"0.weight": float(n)})
                         for n in range(1, 6)])
        session.add(Checkpoint(job_id=job_id, epoch=5, attempt=1, state=b"npz"))
    return job_id, model_id


def rows(settings, table, job_id: str) -> int:  # noqa: ANN001
    with session_scope(settings.database_url) as session:
        return session.scalar(select(func.count()).select_from(table).where(table.job_id == job_id))


def test_epochs_since_n_are_only_the_later_ones(client, auth, finished_job) -> None:  # noqa: ANN001
    job_id = finished_job[0]
    every = client.get(f"/v1/jobs/{job_id}/epochs", headers=auth)
    assert [e["epoch"] for e in every.get_json()["epochs"]] == [1, 2, 3, 4, 5]
    assert every.headers["X-Total-Count"] == "5"
    later = client.get(f"/v1/jobs/{job_id}/epochs?since=3", headers=auth)
    assert later.get_json()["epochs"] == every.get_json()["epochs"][3:]
    assert later.headers["X-Total-Count"] == "2"
    assert client.get(f"/v1/jobs/{job_id}/epochs?since=5", headers=auth).get_json() == {"epochs": []}
    page = client.get(f"/v1/jobs/{job_id}/epochs?since=1&limit=2&offset=2", headers=auth)
    assert [e["epoch"] for e in page.get_json()["epochs"]] == [4, 5] and 'rel="prev"' in page.headers["Link"]
    assert_problem(client.get(f"/v1/jobs/{job_id}/epochs?since=-1", headers=auth), 400, "since")


def test_deleting_a_finished_job_drops_its_epochs_and_keeps_its_model(client, auth, settings, finished_job) -> None:  # noqa: ANN001
    job_id, model_id = finished_job
    assert client.delete(f"/v1/jobs/{job_id}", headers=auth).status_code == 204
    assert_problem(client.get(f"/v1/jobs/{job_id}", headers=auth), 404, "not found")
    assert_problem(client.get(f"/v1/jobs/{job_id}/epochs", headers=auth), 404, "not found")
    assert_problem(client.delete(f"/v1/jobs/{job_id}", headers=auth), 404, "not found")
    assert rows(settings, Epoch, job_id) == 0 and rows(settings, Checkpoint, job_id) == 0
    model = client.get(f"/v1/models/{model_id}", headers=auth).get_json()
    assert model["job_id"] == job_id
    predicted = client.post(f"/v1/models/{model_id}/predictions", headers=auth, json={"instances": [[-5], [5]]})
    assert predicted.status_code == 201 and predicted.get_json()["n"] == 2


@pytest.mark.parametrize("status", ["queued", "running"])
def test_an_active_job_is_409_until_it_has_stopped(client, auth, settings, published, status) -> None:  # noqa: ANN001
    dataset_id = upload(client, auth, IRIS_LIKE_CSV).get_json()["id"]
    job_id = client.post("/v1/jobs", headers=auth, json={"dataset_id": dataset_id, "target": "species",
                                                          "spec": SMALL_SPEC}).get_json()["id"]
    with session_scope(settings.database_url) as session:
        session.execute(update(Job).where(Job.id == job_id).values(status=status))
    assert_problem(client.delete(f"/v1/jobs/{job_id}", headers=auth), 409, "cancel it first")
    assert client.get(f"/v1/jobs/{job_id}", headers=auth).get_json()["status"] == status
    with session_scope(settings.database_url) as session:
        session.execute(update(Job).where(Job.id == job_id).values(status="cancelled"))
    assert client.delete(f"/v1/jobs/{job_id}", headers=auth).status_code == 204


def test_another_tenants_job_is_404(client, auth, auth_b, finished_job) -> None:  # noqa: ANN001
    job_id = finished_job[0]
    assert_problem(client.delete(f"/v1/jobs/{job_id}", headers=auth_b), 404, "not found")
    assert_problem(client.get(f"/v1/jobs/{job_id}/epochs?since=2", headers=auth_b), 404, "not found")
    assert client.get(f"/v1/jobs/{job_id}", headers=auth).status_code == 200
