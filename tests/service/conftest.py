"""API fixtures: an app on the per-test SQLite database (root `settings` fixture), two
tenants with keys, and recording stand-ins for worker.queue.publish_job (`published`) and
publish_prediction (`published_predictions`)."""
from __future__ import annotations

from dataclasses import replace

import pytest

from bps.db import session_scope
from bps.tenants import create_api_key


@pytest.fixture
def app(settings):  # noqa: ANN001, ANN201
    from service.app import create_app

    return create_app(replace(settings, max_upload_bytes=256 * 1024, max_prediction_rows=50))


@pytest.fixture
def client(app):  # noqa: ANN001, ANN201
    return app.test_client()


@pytest.fixture
def keys(settings) -> dict[str, str]:  # noqa: ANN001
    with session_scope(settings.database_url) as session:
        return {name: create_api_key(session=session, tenant_name=name) for name in ("alice", "bob")}


@pytest.fixture
def auth(keys) -> dict[str, str]:  # noqa: ANN001
    return {"Authorization": f"Bearer {keys['alice']}"}


@pytest.fixture
def auth_b(keys) -> dict[str, str]:  # noqa: ANN001
    return {"Authorization": f"Bearer {keys['bob']}"}


@pytest.fixture
def published(monkeypatch) -> list[tuple[str, str]]:  # noqa: ANN001
    """publish_job calls as (job_id, queue); the job row must already be committed."""
    import worker.queue
    from bps.models import Job

    calls: list[tuple[str, str]] = []

    def record(settings, job_id: str, queue: str) -> None:  # noqa: ANN001
        with session_scope(settings.database_url) as session:
            assert session.get(Job, job_id) is not None, "published before the job row was committed"
        calls.append((job_id, queue))

    monkeypatch.setattr(worker.queue, "publish_job", record)
    return calls


@pytest.fixture
def published_predictions(monkeypatch) -> list[tuple[str, str]]:  # noqa: ANN001
    """publish_prediction calls as (prediction_id, queue): asynchronous predictions kept off the broker."""
    import worker.queue

    calls: list[tuple[str, str]] = []
    monkeypatch.setattr(worker.queue, "publish_prediction", lambda settings, pid, queue: calls.append((pid, queue)))
    return calls


@pytest.fixture
def fresh_model_cache():  # noqa: ANN201
    """The API process's model cache emptied before and after the test."""
    from service.predict import clear_cache

    clear_cache()
    yield
    clear_cache()
