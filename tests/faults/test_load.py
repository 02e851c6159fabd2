"""Load: 200 job submissions from 20 concurrent clients (one tenant each) over HTTP against a
real `bps api` (gunicorn) and two `bps worker` processes on PostgreSQL and Redis; half of the
jobs are also published a second time (duplicate delivery). Every accepted job ends, none runs
twice, no epoch row is written twice. Prints the figures for the README."""
from __future__ import annotations

import os
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import func, select

from bps.db import session_scope
from bps.models import Epoch, Job, Model
from bps.tenants import create_api_key
from tests.e2e.flow import Client, wait_healthy
from tests.faults.harness import (
    bps_command, duplicated_epoch_rows, free_port, publish, stop_processes, wait_terminal,
)
from tests.worker.test_runner import blobs_csv

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]
CLIENTS, JOBS_PER_CLIENT, EPOCHS = 20, 10, 2
SPEC = {"layers": [{"type": "dense", "units": 4, "activation": "relu"}, {"type": "dense", "activation": "softmax"}],
        "loss": "cross_entropy", "optimizer": {"type": "adam", "learning_rate": 0.05}, "epochs": EPOCHS,
        "batch_size": 32, "validation_split": 0.0, "early_stopping": None, "device": "cpu"}


@pytest.fixture
def api(fault_settings, tmp_path):  # noqa: ANN001
    port = free_port()
    env = dict(os.environ, DATABASE_URL=fault_settings.database_url, BROKER_URL=fault_settings.broker_url,
               HOST="127.0.0.1", PORT=str(port), WEB_CONCURRENCY="2", GUNICORN_THREADS="8",
               BPS_VAR_DIR=str(tmp_path / "var"), LOG_LEVEL="WARNING")
    with open(tmp_path / "api.log", "wb") as log:
        process = subprocess.Popen(bps_command("api"), env=env, stdout=log, stderr=subprocess.STDOUT)
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(Client(base_url), alive=lambda: process.poll() is None)
        yield base_url
    finally:
        stop_processes([process])


def client_session(settings, base_url: str, number: int) -> list[tuple[int, str | None]]:  # noqa: ANN001
    """One client: its own tenant and dataset, then JOBS_PER_CLIENT submissions."""
    with session_scope(settings.database_url) as session:
        key = create_api_key(session=session, tenant_name=f"load-{number}")
    client = Client(base_url, key)
    status, dataset = client.upload("blobs.csv", blobs_csv(n_per_class=10, seed=number))
    assert status == 201, dataset
    answers = []
    for _ in range(JOBS_PER_CLIENT):
        status, job = client.json("POST", "/v1/jobs", {"dataset_id": dataset["id"], "target": "label", "spec": SPEC})
        answers.append((status, job.get("id") if status == 202 else None))
    return answers


def test_200_submissions_from_20_clients_all_end_once(fault_settings, workers, api):
    settings = fault_settings
    workers.start(concurrency=2), workers.start(concurrency=2)
    started = time.monotonic()
    with ThreadPoolExecutor(CLIENTS) as pool:
        answers = [a for batch in pool.map(lambda n: client_session(settings, api, n), range(CLIENTS)) for a in batch]
    submitted_s = time.monotonic() - started
    accepted = [job_id for status, job_id in answers if status == 202]
    for job_id in accepted[::2]:
        publish(settings, job_id)  # a duplicate delivery of every other job

    statuses = wait_terminal(settings, accepted, timeout=150, logs=workers.logs)
    wall_s = time.monotonic() - started
    with session_scope(settings.database_url) as session:
        jobs = session.execute(select(Job.status, Job.attempt, Job.epoch).where(Job.id.in_(accepted))).all()
        models = session.scalar(select(func.count()).select_from(Model))
        epoch_count = session.scalar(select(func.count()).select_from(Epoch))
    rejected = [status for status, _ in answers if status != 202]
    assert len(answers) == CLIENTS * JOBS_PER_CLIENT and rejected == [], rejected
    assert set(statuses.values()) == {"succeeded"}, workers.logs()
    assert all(attempt == 1 and epoch == EPOCHS for _, attempt, epoch in jobs), "a job ran twice"
    assert models == len(accepted) and epoch_count == EPOCHS * len(accepted)
    assert duplicated_epoch_rows(settings) == 0
    print(f"\nload: submitted {len(answers)}, accepted {len(accepted)}, terminal {len(statuses)}, "
          f"lost 0, ran twice 0, duplicate epoch rows 0, extra deliveries {len(accepted[::2])}; "
          f"submissions took {submitted_s:.1f} s, all terminal after {wall_s:.1f} s "
          f"({len(accepted) / wall_s:.1f} jobs/s; 2 workers x concurrency 2)")
