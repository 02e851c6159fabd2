"""Cancellation through real worker processes: a queued job never starts; a running job stops
at the next batch and keeps the epochs it recorded."""
from __future__ import annotations

import pytest

from bps.db import session_scope
from service.job_service import cancel_job
from tests.faults.harness import epoch_rows, job_of, publish, slow_job, wait_for, wait_terminal

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]


def cancel(settings, job_id: str) -> str:  # noqa: ANN001
    """What POST /v1/jobs/{id}/cancel does; the job's status right after."""
    with session_scope(settings.database_url) as session:
        return cancel_job(session=session, tenant_id=job_of(settings, job_id).tenant_id, job_id=job_id).status


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
    assert job_of(settings, running).model_id is None
    never = job_of(settings, queued)
    assert (never.attempt, never.started_at, epoch_rows(settings, queued)) == (0, None, [])
