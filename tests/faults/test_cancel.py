"""Cancellation through real worker processes: a queued job never starts; a running job stops
at the next batch, within a second of the request (not at the next heartbeat or epoch), on
PostgreSQL + Redis and on the embedded SQLite database and broker, and keeps its trained epochs
as a partial model."""
from __future__ import annotations

import time

import pytest

from bps.db import session_scope
from bps.models import Model
from service.job_service import cancel_job
from tests.faults.harness import (
    Workers,
    epoch_rows,
    job_of,
    long_epoch_job,
    publish,
    slow_job,
    wait_for,
    wait_terminal,
)

pytestmark = [pytest.mark.slow]
PRODUCTION = [pytest.mark.postgres, pytest.mark.redis]
# Heartbeats far apart, so only the cancel poll can explain a prompt stop.
SLOW_HEARTBEAT_ENV = {"HEARTBEAT_INTERVAL_S": "30", "JOB_HEARTBEAT_TIMEOUT_S": "300"}


def cancel(settings, job_id: str) -> str:  # noqa: ANN001
    """What POST /v1/jobs/{id}/cancel does; the job's status right after."""
    with session_scope(settings.database_url) as session:
        return cancel_job(session=session, tenant_id=job_of(settings, job_id).tenant_id, job_id=job_id).status


@pytest.mark.postgres
@pytest.mark.redis
def test_cancel_a_queued_job_and_a_running_one(fault_settings, workers):
    settings = fault_settings
    running, queued = slow_job(settings, epochs=200), slow_job(settings, epochs=200)
    publish(settings, running)
    publish(settings, queued)
    workers.start()  # one worker, one job at a time: `queued` waits behind `running`
    wait_for(lambda: len(epoch_rows(settings, running)) >= 2, 60, "epoch 2 to be recorded")

    assert cancel(settings, queued) == "cancelled"
    cancel(settings, running)
    statuses = wait_terminal(settings, [running, queued], timeout=30, logs=workers.logs)

    assert statuses == {running: "cancelled", queued: "cancelled"}
    kept = [e for e, _ in epoch_rows(settings, running)]
    assert 2 <= len(kept) < 200 and kept == list(range(1, len(kept) + 1))
    with session_scope(settings.database_url) as session:  # its trained epochs are kept as a partial model
        model = session.get(Model, job_of(settings, running).model_id)
        assert (model.partial, model.partial_reason, model.metrics["epoch"]) == (True, "cancelled", len(kept))
    never = job_of(settings, queued)
    assert (never.attempt, never.started_at, epoch_rows(settings, queued)) == (0, None, [])


def cancel_mid_epoch_latency(settings, workers: Workers) -> float:  # noqa: ANN001
    """Seconds from the cancel request to the job's cancelled status, a second into epoch 1 of a
    job whose epochs take many seconds."""
    job_id = long_epoch_job(settings)
    publish(settings, job_id)
    workers.start(**SLOW_HEARTBEAT_ENV)
    try:
        wait_for(lambda: job_of(settings, job_id).status == "running", 120, "the job to start", logs_alive(workers))
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{workers.logs()}") from None
    time.sleep(1.5)  # data loaded, well inside the first epoch
    requested = time.monotonic()
    assert cancel(settings, job_id) == "running"
    wait_for(lambda: job_of(settings, job_id).status == "cancelled", 30, "the cancel", logs_alive(workers))
    latency = time.monotonic() - requested
    assert epoch_rows(settings, job_id) == [], "the first epoch was still running: it stopped mid-epoch"
    print(f"cancel honoured {latency:.2f} s after the request (heartbeat every 30 s)")
    return latency


def logs_alive(workers: Workers):  # noqa: ANN201
    return lambda: all(p.poll() is None for p in workers.processes)


@pytest.mark.parametrize("topology", [pytest.param("production", marks=PRODUCTION), "embedded"])
def test_a_running_job_stops_mid_epoch_within_a_second_or_two(topology, request, tmp_path):  # noqa: ANN001
    settings = request.getfixturevalue("fault_settings" if topology == "production" else "settings")
    workers = Workers(settings, tmp_path)
    try:
        latency = cancel_mid_epoch_latency(settings, workers)
    finally:
        workers.stop_all()
    assert latency < 2.5, workers.logs()
