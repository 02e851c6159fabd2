"""Shared fixtures: a fresh SQLite database per test, and the PostgreSQL / Redis of the CI
machine for tests marked `postgres` / `redis`.

Marked tests are skipped only when their variable is unset; when it is set they run, and an
unreachable server makes them fail (the fixtures raise), never skip."""
from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import replace

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from bps.config import Settings
from bps.db import dispose_all, make_engine
from bps.models import Base

ENV_FOR_MARKER = {"postgres": "BPS_TEST_DATABASE_URL", "redis": "BPS_TEST_BROKER_URL"}


def _gpu_usable() -> bool:
    try:
        from worker.engine.backend import gpu_available  # noqa: PLC0415
    except ImportError:
        return False
    return gpu_available()


def pytest_configure(config: pytest.Config) -> None:
    # Tests, worker subprocesses and the other core compete: one BLAS thread each is faster
    # for these small models than two threads waiting on each other.
    os.environ.setdefault("BPS_BLAS_THREADS", "1")


def pytest_runtest_setup(item: pytest.Item) -> None:
    for marker, env_name in ENV_FOR_MARKER.items():
        if item.get_closest_marker(marker) is not None and not os.environ.get(env_name):
            pytest.skip(f"{env_name} not set")
    if item.get_closest_marker("gpu") is not None and not _gpu_usable():
        pytest.skip("no CUDA GPU and CuPy")


@pytest.fixture
def database_url(tmp_path) -> Iterator[str]:  # noqa: ANN001
    """A fresh SQLite file with the models' schema (Base.metadata.create_all)."""
    url = f"sqlite:///{tmp_path}/bps.db"
    engine = make_engine(url)
    Base.metadata.create_all(engine)
    engine.dispose()
    yield url
    dispose_all()


@pytest.fixture
def settings(database_url: str, tmp_path) -> Settings:  # noqa: ANN001
    """Settings on the per-test SQLite database and a serverless broker in tmp_path; a short
    heartbeat so that cancellation is seen quickly."""
    return Settings(
        database_url=database_url,
        broker_url=f"sqla+sqlite:///{tmp_path}/broker.db",
        var_dir=str(tmp_path),
        heartbeat_interval_s=0.2,
    )


@pytest.fixture(scope="session")
def postgres_server_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for this test session (dropped afterwards), on the
    server of BPS_TEST_DATABASE_URL."""
    base_url = make_url(os.environ["BPS_TEST_DATABASE_URL"])
    name = f"bps_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(base_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield base_url.set(database=name).render_as_string(hide_password=False)
    finally:
        dispose_all()
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def postgres_url(postgres_server_url: str) -> Iterator[str]:
    """The session's PostgreSQL database, emptied before each test (tables dropped)."""
    engine = create_engine(postgres_server_url)
    with engine.begin() as connection:
        connection.execute(text("DROP SCHEMA public CASCADE"))
        connection.execute(text("CREATE SCHEMA public"))
    engine.dispose()
    yield postgres_server_url
    dispose_all()


@pytest.fixture
def redis_url() -> str:
    """BPS_TEST_BROKER_URL after a PING (an unreachable server fails the test)."""
    import redis  # noqa: PLC0415

    url = os.environ["BPS_TEST_BROKER_URL"]
    client = redis.Redis.from_url(url, socket_connect_timeout=5)
    try:
        client.ping()
    finally:
        client.close()
    return url


@pytest.fixture
def postgres_settings(postgres_url: str, settings: Settings) -> Settings:
    """`settings` on the session's PostgreSQL database with the models' schema."""
    engine = create_engine(postgres_url)
    Base.metadata.create_all(engine)
    engine.dispose()
    return replace(settings, database_url=postgres_url)
