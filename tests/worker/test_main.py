"""worker.main: the pool a `bps worker` runs (GPU workers never fork), each job's share of the
cores, and how soon an idle worker stops."""
from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest
from sqlalchemy import func, select

from bps.db import session_scope
from bps.models import WorkerRecord
from tests.faults.harness import bps_command, wait_for
from worker.engine import cpu_kernels, threads
from worker.main import prepare_engine, worker_pool

@pytest.mark.parametrize(("queues", "concurrency", "pool"), [
    (["cpu"], 1, "solo"), (["cpu"], 4, "prefork"), (["gpu"], 1, "solo"), (["cpu", "gpu"], 2, "threads"),
])
def test_gpu_workers_never_fork(queues, concurrency, pool):
    assert worker_pool(queues, concurrency) == pool


def test_a_worker_gives_each_job_its_share_of_the_cores_and_warms_the_kernels(monkeypatch):
    warmed = []
    # what warm_up() compiles for: a worker job's count, as the concurrency just set makes it
    monkeypatch.setattr(cpu_kernels, "warm_up", lambda: warmed.append(threads.default_threads()))
    monkeypatch.setattr(threads, "available_cores", lambda: 16)
    monkeypatch.delenv(threads.ENV, raising=False)
    try:
        prepare_engine(4)
        assert threads.job_threads() == 4 and warmed == [4]  # the parallel kernels too (test_cpu_kernels)
        prepare_engine(8)
        assert threads.job_threads() == 2 and warmed == [4, 2]
    finally:
        threads.set_concurrency(1)
    assert threads.job_threads() == 16


@pytest.mark.slow
def test_an_idle_worker_stops_soon_after_sigterm(settings, tmp_path):
    """Celery's loop for the embedded broker waited up to 2 s for a message, and once more after
    the shutdown flag was seen (as long for a user's Ctrl-C). From SIGTERM to exit: 4.2-4.7 s
    before af6033a, 0.67-0.92 s since (this test, bound at 0, on a /tmp copy of each, 20:40-20:41
    UTC); the bound leaves room for a loaded 2-core machine. (A worker on Redis exits 0 on
    SIGTERM in tests/faults/test_worker_death.py.)"""
    env = dict(os.environ, DATABASE_URL=settings.database_url, BROKER_URL=settings.broker_url,
               BPS_VAR_DIR=str(tmp_path), LOG_LEVEL="WARNING")
    worker = subprocess.Popen(bps_command("worker"), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: _registered_workers(settings), 60, "the worker to register",  # ready: waiting for jobs
                 alive=lambda: worker.poll() is None)
        time.sleep(0.5)
        signalled = time.monotonic()
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=20) == 0
        assert time.monotonic() - signalled < 2.5
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()


def _registered_workers(settings) -> int:  # noqa: ANN001
    with session_scope(settings.database_url) as session:
        return session.scalar(select(func.count()).select_from(WorkerRecord))
