"""The worker's supervisor duties: the reaper republishes lost jobs; a worker that is told to
stop requeues its running job."""
from __future__ import annotations

import gc
import os
import signal
import sqlite3
import subprocess
import time
from contextlib import closing
from datetime import timedelta

from kombu.transport.sqlalchemy import Channel
from sqlalchemy import update

from bps.db import BUSY_TIMEOUT_S, session_scope
from bps.models import Job, utcnow
from tests.faults.harness import bps_command
from tests.worker.test_runner import add_job, classifier_spec, epoch_numbers, job_row
from worker.celery_app import embedded_broker_file
from worker.queue import celery_for
from worker.registry import broker_queue_sizes, reap


def queued_messages(settings, queue: str = "cpu") -> int:  # noqa: ANN001
    with celery_for(settings).connection_for_read() as connection:
        return connection.SimpleQueue(queue).qsize()


def test_reaper_republishes_lost_jobs_and_fails_those_out_of_attempts(settings):
    long_ago = utcnow() - timedelta(seconds=settings.job_heartbeat_timeout_s + 60)
    never_published = add_job(settings, classifier_spec(), created_at=long_ago)
    just_submitted = add_job(settings, classifier_spec())
    silent = add_job(settings, classifier_spec(), status="running", attempt=1, heartbeat_at=long_ago)
    exhausted = add_job(settings, classifier_spec(), status="running", attempt=settings.job_max_attempts,
                        heartbeat_at=long_ago)

    assert reap(settings) == 2
    assert queued_messages(settings) == 2
    assert job_row(settings, never_published).published_at is not None
    assert job_row(settings, silent).published_at is not None
    assert job_row(settings, just_submitted).published_at is None
    failed = job_row(settings, exhausted)
    assert failed.status == "failed" and "stopped responding" in failed.error
    assert reap(settings) == 0, "a republished job is not republished again before it goes stale"


def test_the_reapers_broker_connection_is_set_as_the_publishers(settings):
    """kombu caches one engine per database URL and process, made by whichever connection opens
    the file first: in the API, /metrics' queue sizes may come before the first publish, which
    then reuses that engine. It must be the one with embedded_broker_connector's settings."""
    assert broker_queue_sizes(settings) == {"cpu": 0, "gpu": 0}
    broker_file = embedded_broker_file(settings.broker_url)
    with closing(sqlite3.connect(broker_file)) as reader:
        assert reader.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    engine, _session = Channel._engines[f"sqlite:///{broker_file}"]
    with closing(engine.raw_connection()) as connection:
        assert connection.execute("PRAGMA busy_timeout").fetchone()[0] == BUSY_TIMEOUT_S * 1000
        assert connection.execute("PRAGMA synchronous").fetchone()[0] == 1, "NORMAL"


def test_asking_the_queue_sizes_keeps_no_broker_connection_checked_out(settings):
    """The publishers share the broker engine's pool (5 connections and 10 more): a call that
    left its connection out until the next garbage collection could starve them."""
    assert broker_queue_sizes(settings) == {"cpu": 0, "gpu": 0}
    engine, _session = Channel._engines[f"sqlite:///{embedded_broker_file(settings.broker_url)}"]
    gc.disable()
    try:
        for _ in range(3):
            assert broker_queue_sizes(settings) == {"cpu": 0, "gpu": 0}
        assert engine.pool.checkedout() == 0
    finally:
        gc.enable()


def test_a_stopping_worker_requeues_its_running_job(settings, tmp_path):
    job_id = add_job(settings, classifier_spec(epochs=5000))
    with session_scope(settings.database_url) as session:
        session.execute(update(Job).where(Job.id == job_id).values(published_at=utcnow()))
    from worker.queue import publish_job

    publish_job(settings, job_id, "cpu")
    env = dict(os.environ, DATABASE_URL=settings.database_url, BROKER_URL=settings.broker_url,
               BPS_VAR_DIR=str(tmp_path), LOG_LEVEL="WARNING")
    worker = subprocess.Popen(bps_command("worker"), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while len(epoch_numbers(settings, job_id)) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert job_row(settings, job_id).status == "running"
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=20) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
    job = job_row(settings, job_id)
    assert (job.status, job.worker_id, job.attempt) == ("queued", None, 1)
    assert job.epoch >= 2, "the epochs stay for the next run to resume after"
    assert job.published_at is not None and queued_messages(settings) == 1


def test_a_queued_job_whose_message_was_lost_is_republished_once_its_queue_is_empty(settings):
    long_ago = utcnow() - timedelta(seconds=settings.job_heartbeat_timeout_s + 60)
    lost = add_job(settings, classifier_spec(), created_at=long_ago, published_at=long_ago)
    from worker.queue import publish_job

    other = add_job(settings, classifier_spec())
    publish_job(settings, other, "cpu")  # a message waits in the queue: the lost one may be in it too
    assert reap(settings) == 0 and job_row(settings, lost).published_at == long_ago

    with celery_for(settings).connection_for_read() as connection:
        connection.SimpleQueue("cpu").get(timeout=5).ack()  # the queue drains; `lost` never came
    assert reap(settings) == 1
    assert job_row(settings, lost).published_at > long_ago and queued_messages(settings) == 1


def test_the_supervisor_reaps_every_reaper_interval(settings):
    from dataclasses import replace

    from worker.registry import Supervisor

    long_ago = utcnow() - timedelta(seconds=settings.job_heartbeat_timeout_s + 60)
    supervisor = Supervisor(replace(settings, reaper_interval_s=0.2), "w-test", ["cpu"])
    supervisor.start()
    try:
        lost = add_job(settings, classifier_spec(), created_at=long_ago)
        deadline = time.monotonic() + 10
        while job_row(settings, lost).published_at is None and time.monotonic() < deadline:
            time.sleep(0.05)
        later = add_job(settings, classifier_spec(), created_at=long_ago)
        while job_row(settings, later).published_at is None and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        supervisor.done.set()
        supervisor.join(timeout=5)
    assert job_row(settings, lost).published_at is not None and job_row(settings, later).published_at is not None
    assert queued_messages(settings) == 2 and not supervisor.is_alive()
