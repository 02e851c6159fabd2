"""GET /v1/jobs/{id}/events: server-sent events for status changes and each epoch (CONTRACT §6);
a writer thread plays the worker, committing the job's status and epochs as the worker does."""
from __future__ import annotations

import json
import threading
import time
from dataclasses import replace

import pytest
from sqlalchemy import update

from bps.db import session_scope
from bps.models import Epoch, Job
from tests.service.helpers import IRIS_LIKE_CSV, SMALL_SPEC, assert_problem, upload

EPOCHS = 5


@pytest.fixture
def app(settings):  # noqa: ANN001, ANN201
    from service.app import create_app

    return create_app(replace(settings, event_poll_interval_s=0.02, max_event_streams=2))


@pytest.fixture
def job_id(client, auth, published) -> str:  # noqa: ANN001
    dataset = upload(client, auth, IRIS_LIKE_CSV).get_json()
    body = {"dataset_id": dataset["id"], "target": "species", "spec": {**SMALL_SPEC, "epochs": EPOCHS}}
    response = client.post("/v1/jobs", json=body, headers=auth)
    assert response.status_code == 202, response.get_json()
    return response.get_json()["id"]


def play_worker(database_url: str, job_id: str, pause_s: float = 0.03) -> None:
    """running, EPOCHS epochs (row and Job.epoch in one transaction, as record_epoch), succeeded."""
    def set_job(**values) -> None:  # noqa: ANN003
        with session_scope(database_url) as session:
            session.execute(update(Job).where(Job.id == job_id).values(**values))

    set_job(status="running")
    for n in range(1, EPOCHS + 1):
        time.sleep(pause_s)
        with session_scope(database_url) as session:
            session.add(Epoch(job_id=job_id, epoch=n, loss=1.0 / n, val_loss=float("nan"), grad_norms={"0.weight": n}))
            session.execute(update(Job).where(Job.id == job_id).values(epoch=n, progress=n / EPOCHS))
    set_job(status="succeeded")


def events_of(chunks) -> list[dict]:  # noqa: ANN001
    """Each `event:`/`id:`/`data:` block of the stream as {"event", "id", "data"}."""
    text = "".join(chunk.decode() if isinstance(chunk, bytes) else chunk for chunk in chunks)
    events = []
    for block in text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line and not line.startswith(":"))
        if "event" in fields:
            events.append({"event": fields["event"], "id": fields["id"], "data": json.loads(fields["data"])})
    return events


def summary(events: list[dict]) -> list[tuple[str, object]]:
    return [(e["event"], e["data"]["status"] if e["event"] == "status" else e["data"]["epoch"]) for e in events]


def stream(client, job_id: str, headers: dict):  # noqa: ANN001, ANN201
    return client.get(f"/v1/jobs/{job_id}/events", headers=headers, buffered=False)


def read_all(client, job_id: str, headers: dict) -> list[dict]:  # noqa: ANN001
    """The whole stream's events; closing the response gives its slot back, as gunicorn does."""
    response = stream(client, job_id, headers)
    assert response.status_code == 200, response.get_data(as_text=True)
    try:
        return events_of(response.response)
    finally:
        response.close()


def test_each_epoch_once_in_order_between_the_status_changes_then_the_stream_ends(client, auth, job_id, settings):
    response = stream(client, job_id, auth)
    assert response.status_code == 200 and response.mimetype == "text/event-stream"
    chunks = iter(response.response)
    received = []
    while not events_of(received):  # the queued status first; then the "worker" starts
        received.append(next(chunks))
    writer = threading.Thread(target=play_worker, args=(settings.database_url, job_id))
    writer.start()
    received.extend(chunks)  # ends by itself after the terminal status
    writer.join()
    response.close()
    events = events_of(received)
    assert summary(events) == [("status", "queued"), ("status", "running"),
                               *[("epoch", n) for n in range(1, EPOCHS + 1)], ("status", "succeeded")]
    assert events[2]["data"]["val_loss"] is None, "NaN goes out as null"
    assert events[-1]["data"]["epoch"] == EPOCHS and events[-1]["data"]["id"] == job_id
    assert len({e["id"] for e in events}) == len(events), "every event has its own id"


def test_last_event_id_resumes_after_that_event(client, auth, job_id, settings):
    play_worker(settings.database_url, job_id, pause_s=0)
    first = read_all(client, job_id, auth)
    assert summary(first) == [*[("epoch", n) for n in range(1, EPOCHS + 1)], ("status", "succeeded")]
    after_second = first[1]["id"]
    resumed = read_all(client, job_id, {**auth, "Last-Event-ID": after_second})
    assert summary(resumed) == [("epoch", 3), ("epoch", 4), ("epoch", 5), ("status", "succeeded")]
    assert read_all(client, job_id, {**auth, "Last-Event-ID": first[-1]["id"]}) == []


def test_another_tenants_job_is_404_and_a_foreign_event_id_400(client, auth, auth_b, job_id):
    assert_problem(stream(client, job_id, auth_b), 404, job_id)
    assert_problem(stream(client, "no-such-job", auth), 404)
    assert_problem(stream(client, job_id, {**auth, "Last-Event-ID": "banana"}), 400, "Last-Event-ID")


def test_streams_beyond_max_event_streams_get_503_with_retry_after_until_one_closes(client, auth, job_id):
    open_streams = [stream(client, job_id, auth) for _ in range(2)]
    for response in open_streams:
        assert next(iter(response.response))  # started and holding its slot (the job stays queued)
    refused = stream(client, job_id, auth)
    assert_problem(refused, 503, "MAX_EVENT_STREAMS")
    assert int(refused.headers["Retry-After"]) > 0
    open_streams[0].close()
    again = stream(client, job_id, auth)
    assert again.status_code == 200
    again.close()
    open_streams[1].close()


@pytest.mark.postgres
def test_on_postgresql_each_epoch_once_and_resume(postgres_settings, keys_pg, published):  # noqa: ANN001
    from service.app import create_app

    client = create_app(replace(postgres_settings, event_poll_interval_s=0.02)).test_client()
    auth = {"Authorization": f"Bearer {keys_pg}"}
    dataset = upload(client, auth, IRIS_LIKE_CSV).get_json()
    body = {"dataset_id": dataset["id"], "target": "species", "spec": {**SMALL_SPEC, "epochs": EPOCHS}}
    job_id = client.post("/v1/jobs", json=body, headers=auth).get_json()["id"]
    writer = threading.Thread(target=play_worker, args=(postgres_settings.database_url, job_id))
    writer.start()
    events = read_all(client, job_id, auth)
    writer.join()
    epochs = [e["data"]["epoch"] for e in events if e["event"] == "epoch"]
    assert epochs == list(range(1, EPOCHS + 1)) and events[-1]["data"]["status"] == "succeeded"
    resumed = read_all(client, job_id, {**auth, "Last-Event-ID": events[-3]["id"]})
    assert summary(resumed) == [("epoch", EPOCHS), ("status", "succeeded")]


@pytest.fixture
def keys_pg(postgres_settings) -> str:  # noqa: ANN001
    from bps.tenants import create_api_key

    with session_scope(postgres_settings.database_url) as session:
        return create_api_key(session=session, tenant_name="alice")


def test_the_stream_slots_are_one_semaphore_made_at_the_first_stream(client, auth, job_id, monkeypatch):
    import service.events  # noqa: PLC0415

    made, real = [], threading.BoundedSemaphore

    def counting_semaphore(limit: int) -> threading.BoundedSemaphore:
        made.append(limit)
        return real(limit)

    monkeypatch.setattr(service.events.threading, "BoundedSemaphore", counting_semaphore)
    for _ in range(3):
        response = stream(client, job_id, auth)
        assert next(iter(response.response))
        response.close()
    assert made == [2]
