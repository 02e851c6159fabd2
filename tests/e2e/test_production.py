"""End to end on the production topology: PostgreSQL (BPS_TEST_DATABASE_URL, a fresh database
for the session) and Redis (BPS_TEST_BROKER_URL), with real `bps migrate`, `bps keys create`,
`bps api` (gunicorn) and `bps worker` processes. Not run when the variables are unset; when
they are set an unreachable server fails the test."""
from __future__ import annotations

import os
import subprocess

import pytest

from tests.e2e.flow import Client, free_port, train_and_predict, wait_healthy
from tests.faults.harness import bps_command, stop_processes

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]


@pytest.fixture
def production_env(postgres_url, redis_url, tmp_path):  # noqa: ANN001
    env = dict(os.environ)
    env.update(DATABASE_URL=postgres_url, BROKER_URL=redis_url, BPS_VAR_DIR=str(tmp_path / "var"),
               HOST="127.0.0.1", PORT=str(free_port()), WEB_CONCURRENCY="1", LOG_LEVEL="WARNING")
    return env


def test_production_topology_trains_and_predicts(production_env, tmp_path):
    env = production_env
    migrated = subprocess.run(bps_command("migrate"), env=env, capture_output=True, text=True, timeout=60)
    assert migrated.returncode == 0, migrated.stderr
    created = subprocess.run(bps_command("keys", "create", "e2e"), env=env, capture_output=True, text=True, timeout=60)
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip().splitlines()[-1]

    logs = {name: open(tmp_path / f"{name}.log", "wb") for name in ("api", "worker")}
    processes = {
        "api": subprocess.Popen(bps_command("api"), env=env, stdout=logs["api"], stderr=subprocess.STDOUT),
        "worker": subprocess.Popen(bps_command("worker", "--queues", "cpu", "--concurrency", "2"), env=env,
                                   stdout=logs["worker"], stderr=subprocess.STDOUT),
    }
    try:
        base_url = f"http://127.0.0.1:{env['PORT']}"
        health = wait_healthy(Client(base_url), alive=lambda: all(p.poll() is None for p in processes.values()))
        assert health["status"] == "ok"
        job = train_and_predict(Client(base_url, key))
        assert job["device"] == "cpu"
    finally:
        stop_processes(list(processes.values()), grace_s=30)
        for log in logs.values():
            log.close()
    assert all(p.returncode == 0 for p in processes.values()), {
        name: (tmp_path / f"{name}.log").read_text()[-2000:] for name in processes}
