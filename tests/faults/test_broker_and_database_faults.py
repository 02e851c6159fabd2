"""The broker and the database fail under running workers: Redis is killed and restarted empty
(a private `redis-server`, never the shared one) with jobs queued and running, and every
database connection is terminated mid-epoch (`pg_terminate_backend`). Every job still ends."""
from __future__ import annotations

import time
from dataclasses import replace

import pytest
from sqlalchemy import create_engine, text

from bps.models import utcnow
from tests.faults.harness import (
    PrivateRedis, Workers, assert_each_epoch_once, epoch_rows, job_of, publish, quick_job, slow_job, wait_for,
    wait_terminal,
)

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]
TERMINATE_OTHERS = text("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND pid <> pg_backend_pid()")


@pytest.fixture
def private_redis(tmp_path):  # noqa: ANN001
    server = PrivateRedis(tmp_path)
    if server.binary is None:
        pytest.fail("redis-server is not installed (needed to restart a private Redis)")
    server.start()
    yield server
    server.kill()


def test_redis_restarted_with_jobs_queued_and_running_every_job_ends(fault_settings, private_redis, tmp_path):
    settings = replace(fault_settings, broker_url=private_redis.url)
    workers = Workers(settings, tmp_path)
    try:
        workers.start()
        running = slow_job(settings, epochs=10)
        queued = [quick_job(settings) for _ in range(3)]
        for job_id in [running, *queued]:
            publish(settings, job_id)
        wait_for(lambda: len(epoch_rows(settings, running)) >= 1, 60, "the first job to be running")

        private_redis.kill()  # every queued message is lost with it
        killed_at = utcnow()
        time.sleep(1.0)
        private_redis.start()

        statuses = wait_terminal(settings, [running, *queued], timeout=90, logs=workers.logs)
    finally:
        workers.stop_all()
    assert set(statuses.values()) == {"succeeded"}, workers.logs()
    assert_each_epoch_once(settings, running, 10)
    for job_id in queued:
        assert_each_epoch_once(settings, job_id, 2)
        republished = job_of(settings, job_id)
        assert republished.attempt == 1 and republished.published_at > killed_at, "the reaper sent it again"
    print(f"\nRedis restart: {1 + len(queued)} jobs (1 running, {len(queued)} queued), all succeeded, 0 lost")


def test_database_connections_terminated_mid_epoch_the_job_still_ends(fault_settings, workers):
    settings = fault_settings
    workers.start()
    job_id = slow_job(settings, epochs=12)
    publish(settings, job_id)
    wait_for(lambda: len(epoch_rows(settings, job_id)) >= 1, 60, "epoch 1 to be recorded")

    admin = create_engine(settings.database_url, isolation_level="AUTOCOMMIT")
    terminated = 0
    try:
        for _ in range(6):  # a few rounds over the next epochs: idle and busy connections alike
            with admin.connect() as connection:
                terminated += int(connection.execute(TERMINATE_OTHERS).scalar_one())
            time.sleep(0.35)
    finally:
        admin.dispose()
    from bps.db import dispose_all

    dispose_all()  # this process's pooled connections were terminated too

    statuses = wait_terminal(settings, [job_id], timeout=90, logs=workers.logs)
    assert terminated >= 6
    assert statuses[job_id] == "succeeded", (job_of(settings, job_id).error, workers.logs())
    assert_each_epoch_once(settings, job_id, 12)
    print(f"\npg_terminate_backend: {terminated} connections killed over 6 rounds mid-run; job succeeded, "
          "12/12 epochs once")
