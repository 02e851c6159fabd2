"""Many workers reap at once (every worker process runs a reaper): a lost job is published
once, not once per reaper."""
from __future__ import annotations

import threading
from datetime import timedelta

import pytest

from bps.models import utcnow
from tests.faults.harness import quick_job
from tests.worker.test_registry import queued_messages
from worker.registry import reap

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


def test_concurrent_reapers_republish_each_lost_job_once(fault_settings):
    settings = fault_settings
    long_ago = utcnow() - timedelta(seconds=120)
    lost = [quick_job(settings) for _ in range(3)]
    from bps.db import session_scope
    from bps.models import Job

    with session_scope(settings.database_url) as session:
        for job_id in lost:
            session.get(Job, job_id).created_at = long_ago
    counts, barrier = [], threading.Barrier(4)

    def reaper() -> None:
        barrier.wait()
        counts.append(reap(settings))

    threads = [threading.Thread(target=reaper) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sum(counts) == 3 and queued_messages(settings) == 3
