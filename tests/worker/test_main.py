"""worker.main: the pool a `bps worker` runs (GPU workers never fork), each job's share of the
cores, and how soon an idle worker stops."""
from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import replace

import pytest
from sqlalchemy import func, select

from bps.db import session_scope
from bps.models import WorkerRecord
from tests.faults.harness import bps_command
from worker.engine import cpu_kernels, threads
from worker.main import prepare_engine, worker_pool

IDLE_WORKER_REDIS_DB = 14  # a database index of its own: the worker must not take another test's messages


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


@pytest.fixture(params=["embedded", pytest.param("redis", marks=pytest.mark.redis)])
def broker_settings(request, settings):  # noqa: ANN001
    if request.param == "embedded":
        return settings
    redis_url = request.getfixturevalue("redis_url")
    return replace(settings, broker_url=f"{redis_url.rsplit('/', 1)[0]}/{IDLE_WORKER_REDIS_DB}")


def test_an_idle_worker_stops_soon_after_sigterm(broker_settings, tmp_path):
    """Celery's loop for the embedded broker waited up to 2 s for a message, and once more after
    the shutdown flag was seen (~3 s from SIGTERM to exit, as long for a user's Ctrl-C)."""
    env = dict(os.environ, DATABASE_URL=broker_settings.database_url, BROKER_URL=broker_settings.broker_url,
               BPS_VAR_DIR=str(tmp_path), LOG_LEVEL="WARNING")
    worker = subprocess.Popen(bps_command("worker"), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not _registered_workers(broker_settings) and time.monotonic() < deadline:  # ready: waiting for jobs
            assert worker.poll() is None, "the worker exited before it was ready"
            time.sleep(0.05)
        time.sleep(0.5)
        signalled = time.monotonic()
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=20) == 0
        assert time.monotonic() - signalled < 1.5
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()


def _registered_workers(settings) -> int:  # noqa: ANN001
    with session_scope(settings.database_url) as session:
        return session.scalar(select(func.count()).select_from(WorkerRecord))
