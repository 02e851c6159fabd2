"""Fixtures of the fault tests: PostgreSQL (BPS_TEST_DATABASE_URL) and Redis
(BPS_TEST_BROKER_URL, on a database index of its own, emptied first) and real worker processes."""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pytest

from bps.config import Settings
from tests.faults.harness import Workers

FAULTS_REDIS_DB = 13


@pytest.fixture
def fault_settings(postgres_settings: Settings, redis_url: str) -> Settings:
    import redis  # noqa: PLC0415

    broker_url = redis_url.rsplit("/", 1)[0] + f"/{FAULTS_REDIS_DB}" if redis_url.count("/") >= 3 else \
        f"{redis_url.rstrip('/')}/{FAULTS_REDIS_DB}"
    client = redis.Redis.from_url(broker_url)
    client.flushdb()
    client.close()
    return replace(postgres_settings, broker_url=broker_url, job_heartbeat_timeout_s=3.0, reaper_interval_s=1.0)


@pytest.fixture
def workers(fault_settings: Settings, tmp_path) -> Iterator[Workers]:  # noqa: ANN001
    pool = Workers(fault_settings, tmp_path)
    yield pool
    pool.stop_all()
