"""The `bps` console script, run as real processes on a temporary SQLite database."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, select

from bps.cli import build_parser, gunicorn_argv, worker_pool
from bps.config import Settings
from bps.db import session_scope
from bps.models import Base, Job, Tenant, WorkerRecord
from bps.tenants import authenticate

BPS = Path(sys.executable).with_name("bps")


def bps(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess:
    command = [str(BPS)] if BPS.exists() else [sys.executable, "-m", "bps.cli"]
    return subprocess.run(command + list(args), env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def env(tmp_path) -> dict[str, str]:  # noqa: ANN001
    values = dict(os.environ)
    values.update(DATABASE_URL=f"sqlite:///{tmp_path}/var/bps.db", BROKER_URL=f"sqla+sqlite:///{tmp_path}/var/broker.db",
                  BPS_VAR_DIR=str(tmp_path / "var"))
    return values


def test_migrate_creates_every_table(env):
    result = bps("migrate", env=env)
    assert result.returncode == 0, result.stderr
    engine = create_engine(env["DATABASE_URL"])
    tables = set(inspect(engine).get_table_names())
    engine.dispose()
    assert set(Base.metadata.tables) | {"alembic_version"} == tables


def test_keys_create_prints_a_working_key_on_the_last_line(env):
    assert bps("migrate", env=env).returncode == 0
    first = bps("keys", "create", "acme", env=env)
    second = bps("keys", "create", "acme", env=env)
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    keys = [result.stdout.strip().splitlines()[-1] for result in (first, second)]
    assert keys[0] != keys[1]
    with session_scope(env["DATABASE_URL"]) as session:
        owners = {authenticate(session=session, key=key) for key in keys}
        acme = session.scalar(select(Tenant.id).where(Tenant.name == "acme"))
    assert owners == {acme}


def test_keys_create_before_migrate_says_what_to_do(env):
    result = bps("keys", "create", "acme", env=env)
    assert result.returncode != 0 and "run `bps migrate` first" in result.stderr


def test_worker_refuses_an_unknown_queue(env):
    result = bps("worker", "--queues", "tpu", env=env)
    assert result.returncode != 0 and "--queues must name some of cpu, gpu" in result.stderr


def test_parser_reads_worker_options():
    args = build_parser().parse_args(["worker", "--queues", "cpu,gpu", "--concurrency", "4"])
    assert (args.command, args.queues, args.concurrency, args.pool) == ("worker", "cpu,gpu", 4, None)


@pytest.mark.parametrize(("queues", "concurrency", "pool"), [
    (["cpu"], 1, "solo"), (["cpu"], 4, "prefork"), (["gpu"], 1, "solo"), (["cpu", "gpu"], 2, "threads"),
])
def test_gpu_workers_never_fork(queues, concurrency, pool):
    assert worker_pool(queues, concurrency) == pool


def test_api_binds_host_and_port():
    argv = gunicorn_argv(Settings(database_url="sqlite://", broker_url="memory://", host="0.0.0.0", port=9123), 3)
    assert argv[argv.index("--bind") + 1] == "0.0.0.0:9123"
    assert argv[argv.index("--workers") + 1] == "3" and argv[-1] == "service.app:create_app()"


def wait_for(predicate, timeout: float = 30.0) -> bool:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def test_a_worker_process_registers_and_runs_published_jobs(env):
    """A real `bps worker` takes a job from the serverless broker; the job's dataset is gone,
    so the runner must end it failed with a sentence (no engine needed for this path)."""
    from worker.queue import publish_job

    assert bps("migrate", env=env).returncode == 0
    settings = Settings(database_url=env["DATABASE_URL"], broker_url=env["BROKER_URL"])
    with session_scope(settings.database_url) as session:
        tenant = Tenant(name="acme")
        session.add(tenant)
        session.flush()
        job = Job(tenant_id=tenant.id, dataset_id="gone", target="y", spec={"loss": "mse", "epochs": 1})
        session.add(job)
        session.flush()
        job_id = job.id
    publish_job(settings, job_id, "cpu")
    command = [str(BPS)] if BPS.exists() else [sys.executable, "-m", "bps.cli"]
    worker = subprocess.Popen(command + ["worker", "--queues", "cpu"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def finished() -> bool:
            with session_scope(settings.database_url) as session:
                return session.get(Job, job_id).status == "failed"

        assert wait_for(finished), "the worker did not run the job"
        with session_scope(settings.database_url) as session:
            failed = session.get(Job, job_id)
            records = session.scalars(select(WorkerRecord)).all()
        assert "was deleted before training started" in failed.error and failed.published_at is not None
        assert [(r.device, r.queues) for r in records] == [("cpu", ["cpu"])]
    finally:
        worker.terminate()
        assert worker.wait(timeout=20) == 0
