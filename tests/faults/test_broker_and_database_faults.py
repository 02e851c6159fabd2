"""The broker and the database fail under running workers: Redis is killed and restarted empty
(a private `redis-server`, never the shared one) with jobs queued and running, and every
database connection is terminated mid-epoch (`pg_terminate_backend`). Every job still ends."""
from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import replace

import pytest
from sqlalchemy import create_engine, text

from bps.db import session_scope
from bps.models import utcnow
from bps.tenants import create_api_key
from tests.e2e.flow import Client, wait_healthy
from tests.faults.harness import (
    PrivateRedis, Workers, assert_each_epoch_once, bps_command, epoch_rows, free_port, job_of, publish, quick_job,
    slow_job, wait_for, wait_terminal,
)
from tests.worker.test_runner import blobs_csv, classifier_spec

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


def test_broker_down_at_submission_the_api_answers_202_and_the_job_runs_once_it_is_back(
        fault_settings, private_redis, tmp_path):
    settings = replace(fault_settings, broker_url=private_redis.url)
    private_redis.kill()
    port = free_port()
    env = dict(os.environ, DATABASE_URL=settings.database_url, BROKER_URL=settings.broker_url, HOST="127.0.0.1",
               PORT=str(port), WEB_CONCURRENCY="1", BPS_VAR_DIR=str(tmp_path / "var"), LOG_LEVEL="WARNING")
    with open(tmp_path / "api.log", "wb") as log:
        api = subprocess.Popen(bps_command("api"), env=env, stdout=log, stderr=subprocess.STDOUT)
    workers = Workers(settings, tmp_path)
    try:
        base_url = f"http://127.0.0.1:{port}"
        assert wait_healthy(Client(base_url), alive=lambda: api.poll() is None)["broker"] != "ok"
        with session_scope(settings.database_url) as session:
            client = Client(base_url, create_api_key(session=session, tenant_name="broker-down"))
        dataset = client.upload("blobs.csv", blobs_csv())[1]
        started = time.monotonic()
        status, job = client.json("POST", "/v1/jobs", {"dataset_id": dataset["id"], "target": "label",
                                                       "spec": classifier_spec(epochs=3)})
        assert status == 202 and time.monotonic() - started < 10, (status, job)
        assert job_of(settings, job["id"]).published_at is None  # nothing reached a broker

        private_redis.start()
        workers.start()
        statuses = wait_terminal(settings, [job["id"]], timeout=90, logs=workers.logs)
    finally:
        workers.stop_all()
        api.terminate()
        api.wait(timeout=15)
    assert statuses[job["id"]] == "succeeded", workers.logs()
    assert_each_epoch_once(settings, job["id"], 3)
    assert job_of(settings, job["id"]).attempt == 1


def test_database_down_at_claim_is_retried_a_bounded_number_of_times_then_given_up_with_an_error(
        fault_settings, workers, tmp_path):
    job_id = quick_job(fault_settings)
    publish(fault_settings, job_id)
    unreachable = replace(fault_settings, database_url=f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/test")
    (tmp_path / "down").mkdir()
    cut_off = Workers(unreachable, tmp_path / "down")
    cut_off.start(CLAIM_DB_RETRIES="2", CLAIM_DB_RETRY_S="0.2", LOG_FORMAT="json")

    def about_the_job() -> list[dict]:
        text = (tmp_path / "down" / "worker-0.log").read_text(errors="replace")
        lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
        return [line for line in lines if line.get("job_id") == job_id]

    try:
        wait_for(lambda: any(line["level"] == "ERROR" for line in about_the_job()), 60, "the claim to be given up")
    finally:
        cut_off.stop_all()
    lines = about_the_job()
    retries = [line for line in lines if "database unavailable" in line["message"]]
    errors = [line for line in lines if line["level"] == "ERROR"]
    assert len(retries) == 2 and len(errors) == 1, lines
    assert "given up" in errors[0]["message"] and errors[0]["worker"].startswith("bps-cpu-")
    assert job_of(fault_settings, job_id).status == "queued"

    workers.start()  # the database answers: a worker's reaper republishes the job, which runs once
    assert wait_terminal(fault_settings, [job_id], timeout=60, logs=workers.logs)[job_id] == "succeeded"
    assert_each_epoch_once(fault_settings, job_id, 2)
