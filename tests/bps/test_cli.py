"""The `bps` console script, run as real processes on a temporary SQLite database."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from sqlalchemy import create_engine, inspect, select

from bps.cli import build_parser, gunicorn_argv
from bps.config import Settings
from bps.db import session_scope
from bps.models import Base, Job, Tenant, WorkerRecord
from bps.tenants import authenticate
from tests.faults.harness import bps_command


def bps(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(bps_command(*args), env=env, capture_output=True, text=True, timeout=timeout)


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


def test_keys_list_shows_ids_and_prefixes_never_the_keys(env):
    assert bps("migrate", env=env).returncode == 0
    keys = [bps("keys", "create", name, env=env).stdout.strip().splitlines()[-1] for name in ("acme", "zeta", "acme")]
    listed = bps("keys", "list", env=env)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.strip().splitlines()
    assert lines[0].split()[:3] == ["TENANT", "KEY", "ID"] and len(lines) == 4
    assert [line.split()[0] for line in lines[1:]] == ["acme", "acme", "zeta"]
    assert all(key not in listed.stdout for key in keys)
    assert {line.split()[2] for line in lines[1:]} == {key[:12] for key in keys}


def test_a_revoked_key_answers_401_and_the_others_keep_working(env, tmp_path):
    from dataclasses import replace

    from bps.config import load_settings
    from service.app import create_app

    assert bps("migrate", env=env).returncode == 0
    doomed, kept = (bps("keys", "create", "acme", env=env).stdout.strip().splitlines()[-1] for _ in range(2))
    key_id = next(line.split()[1] for line in bps("keys", "list", env=env).stdout.splitlines()
                  if line.split()[2] == doomed[:12])
    client = create_app(replace(load_settings(env), rate_limit_per_minute=0)).test_client()
    assert client.get("/v1/datasets", headers={"Authorization": f"Bearer {doomed}"}).status_code == 200
    by_prefix = bps("keys", "revoke", doomed[:12], env=env)
    assert by_prefix.returncode == 0 and f"key {key_id} " in by_prefix.stdout and "is revoked" in by_prefix.stdout
    refused = client.get("/v1/datasets", headers={"Authorization": f"Bearer {doomed}"})
    assert refused.status_code == 401 and "revoked" in refused.get_json()["detail"]
    assert client.get("/v1/datasets", headers={"Authorization": f"Bearer {kept}"}).status_code == 200
    again = bps("keys", "revoke", key_id, env=env)
    assert again.returncode == 0 and "already revoked" in again.stdout
    revoked_column = [line for line in bps("keys", "list", env=env).stdout.splitlines() if key_id in line][0]
    assert revoked_column.split()[-1] != "-"


@pytest.mark.parametrize(("argument", "message"), [("bps_", "no API key has"), ("nonexistent-id", "no API key has")])
def test_keys_revoke_refuses_unknown_or_too_short_names(env, argument, message):
    assert bps("migrate", env=env).returncode == 0
    bps("keys", "create", "acme", env=env)
    result = bps("keys", "revoke", argument, env=env)
    assert result.returncode != 0 and message in result.stderr


@pytest.mark.parametrize("name", ["", "   ", "x" * 201, "tab\there", "bell\x07"])
def test_keys_create_refuses_a_bad_tenant_name_without_a_traceback(env, name):
    assert bps("migrate", env=env).returncode == 0
    result = bps("keys", "create", name, env=env)
    assert result.returncode == 1 and result.stderr.startswith("bps keys create: a tenant name")
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_keys_revoke_refuses_an_ambiguous_prefix(env):
    from bps.models import ApiKey

    assert bps("migrate", env=env).returncode == 0
    for _ in range(2):
        bps("keys", "create", "acme", env=env)
    with session_scope(env["DATABASE_URL"]) as session:  # two keys sharing a prefix, as chance may make
        for row in session.scalars(select(ApiKey)):
            row.prefix = "bps_samepref"
    result = bps("keys", "revoke", "bps_same", env=env)
    assert result.returncode != 0 and "2 keys start with 'bps_same'" in result.stderr


def test_bps_does_not_import_the_worker_layer(env):
    """bps.cli (and so every bps command but `bps worker`) loads no worker module."""
    probe = "import sys, bps.cli; sys.exit(any(m == 'worker' or m.startswith('worker.') for m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", probe], env=env).returncode == 0


def test_keys_create_before_migrate_says_what_to_do(env):
    result = bps("keys", "create", "acme", env=env)
    assert result.returncode != 0 and "run `bps migrate` first" in result.stderr


def test_worker_refuses_an_unknown_queue(env):
    result = bps("worker", "--queues", "tpu", env=env)
    assert result.returncode != 0 and "--queues must name some of cpu, gpu" in result.stderr


def test_parser_reads_worker_options():
    args = build_parser().parse_args(["worker", "--queues", "cpu,gpu", "--concurrency", "4"])
    assert (args.command, args.queues, args.concurrency, args.pool) == ("worker", "cpu,gpu", 4, None)


def test_api_binds_host_and_port():
    argv = gunicorn_argv(Settings(database_url="sqlite://", broker_url="memory://", host="0.0.0.0", port=9123), 3)
    assert argv[argv.index("--bind") + 1] == "0.0.0.0:9123"
    assert argv[argv.index("--workers") + 1] == "3" and argv[-1] == "service.app:create_app()"


def test_api_takes_request_lines_up_to_gunicorns_maximum():
    from gunicorn.config import Config  # noqa: PLC0415

    argv = gunicorn_argv(Settings(database_url="sqlite://", broker_url="memory://"))
    config = Config()
    parsed = config.parser().parse_args(argv[3:])
    config.set("limit_request_line", parsed.limit_request_line)  # validated as gunicorn validates it
    assert config.limit_request_line == 8190


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
    worker = subprocess.Popen(bps_command("worker", "--queues", "cpu"), env=env,
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
