"""Faults at the API and limits that protect it: the database down (503 problem+json with
Retry-After on every /v1 route, never 500), the broker down at submission (202, the job stays
queued and unpublished), the per-key request rate and the per-tenant job quota (429)."""
from __future__ import annotations

import time
from dataclasses import replace

import pytest

from bps.db import session_scope
from bps.models import Job
from tests.service.helpers import IRIS_LIKE_CSV, SMALL_SPEC, assert_problem, upload

V1_ROUTES = [
    ("get", "/v1/datasets"), ("post", "/v1/datasets"), ("get", "/v1/datasets/x"), ("delete", "/v1/datasets/x"),
    ("get", "/v1/jobs"), ("post", "/v1/jobs"), ("get", "/v1/jobs/x"), ("get", "/v1/jobs/x/epochs"),
    ("post", "/v1/jobs/x/cancel"), ("get", "/v1/models/x"), ("get", "/v1/models/x/download"),
    ("post", "/v1/models/x/predictions"), ("get", "/v1/predictions/x"),
]


def _dead_database_urls(tmp_path) -> dict[str, str]:  # noqa: ANN001
    directory = tmp_path / "a-directory"
    directory.mkdir()
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    return {
        "postgres on a closed port": "postgresql+psycopg://nobody@127.0.0.1:1/none?connect_timeout=2",
        "sqlite file that is a directory": f"sqlite:///{directory}",
        "sqlite directory that cannot be made": f"sqlite:///{blocker}/sub/bps.db",
    }


@pytest.mark.parametrize("which", ["postgres on a closed port", "sqlite file that is a directory",
                                   "sqlite directory that cannot be made"])
def test_every_v1_route_answers_503_when_the_database_is_down(settings, tmp_path, which) -> None:  # noqa: ANN001
    from service.app import create_app

    url = _dead_database_urls(tmp_path)[which]
    client = create_app(replace(settings, database_url=url)).test_client()
    headers = {"Authorization": "Bearer bps_some-key"}
    for method, path in V1_ROUTES:
        response = getattr(client, method)(path, headers=headers, json={})
        assert_problem(response, 503, "database")
        assert int(response.headers["Retry-After"]) > 0, (method, path)
    health = client.get("/healthz")
    assert health.status_code == 503
    assert health.get_json()["database"] == "unreachable" and health.get_json()["status"] == "unavailable"


@pytest.fixture
def dataset_id(client, auth) -> str:  # noqa: ANN001
    return upload(client, auth, IRIS_LIKE_CSV).get_json()["id"]


def test_submission_with_the_broker_down_answers_202_quickly(app, client, auth, dataset_id, settings) -> None:  # noqa: ANN001
    app.config["BPS_SETTINGS"] = replace(app.config["BPS_SETTINGS"], broker_url="redis://127.0.0.1:1/0")
    started = time.monotonic()
    response = client.post("/v1/jobs", json={"dataset_id": dataset_id, "target": "species", "spec": SMALL_SPEC},
                           headers=auth)
    elapsed = time.monotonic() - started
    assert response.status_code == 202, response.get_json()
    assert elapsed < 3.0
    with session_scope(settings.database_url) as session:
        job = session.get(Job, response.get_json()["id"])
        assert job.status == "queued" and job.published_at is None  # left for the reaper to publish


def test_a_hanging_publish_is_abandoned_after_the_timeout(app, client, auth, dataset_id, monkeypatch) -> None:  # noqa: ANN001
    import worker.queue
    from service import job_service

    monkeypatch.setattr(job_service, "PUBLISH_TIMEOUT_S", 0.3)
    monkeypatch.setattr(worker.queue, "publish_job", lambda *_args: time.sleep(5))
    started = time.monotonic()
    response = client.post("/v1/jobs", json={"dataset_id": dataset_id, "target": "species", "spec": SMALL_SPEC},
                           headers=auth)
    assert response.status_code == 202 and time.monotonic() - started < 2.0


def _limited_client(settings, limit: int, broker_url: str | None = None):  # noqa: ANN001, ANN202
    from service.app import create_app

    config = replace(settings, rate_limit_per_minute=limit, broker_url=broker_url or settings.broker_url)
    return create_app(config).test_client()


def _assert_rate_limited(client, auth, auth_b, limit: int) -> None:  # noqa: ANN001
    for _ in range(limit):
        assert client.get("/v1/jobs", headers=auth).status_code == 200
    limited = client.get("/v1/jobs", headers=auth)
    assert_problem(limited, 429, "RATE_LIMIT_PER_MINUTE")
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    assert client.get("/v1/jobs", headers=auth_b).status_code == 200  # counted per key
    assert client.get("/healthz").status_code == 200  # not rate limited


def test_rate_limit_per_key_in_process(settings, auth, auth_b) -> None:  # noqa: ANN001
    _assert_rate_limited(_limited_client(settings, 3), auth, auth_b, 3)


@pytest.mark.redis
def test_rate_limit_per_key_in_redis_is_shared_across_apps(settings, auth, auth_b, redis_url) -> None:  # noqa: ANN001
    first = _limited_client(settings, 4, redis_url)
    for _ in range(2):
        assert first.get("/v1/jobs", headers=auth).status_code == 200
    from service import rate_limit

    rate_limit._limiters.clear()  # a second process would have its own limiter: only Redis is shared
    second = _limited_client(settings, 4, redis_url)
    _assert_rate_limited(second, auth, auth_b, 2)


def test_rate_limit_window_and_retry_after() -> None:
    from bps.problems import TooManyRequests
    from service.rate_limit import RateLimiter

    limiter = RateLimiter(2, "sqla+sqlite:///unused.db")
    limiter.check("k", now=120.0)
    limiter.check("k", now=150.0)
    with pytest.raises(TooManyRequests) as raised:
        limiter.check("k", now=170.5)
    assert raised.value.headers["Retry-After"] == "10"
    limiter.check("k", now=180.0)  # a new window


def test_rate_limit_falls_back_to_the_process_when_redis_is_down() -> None:
    from bps.problems import TooManyRequests
    from service.rate_limit import RateLimiter

    limiter = RateLimiter(1, "redis://127.0.0.1:1/0")
    limiter.check("k", now=60.0)
    with pytest.raises(TooManyRequests):
        limiter.check("k", now=61.0)


def test_running_and_queued_jobs_quota(app, client, auth, auth_b, dataset_id, published, settings) -> None:  # noqa: ANN001
    app.config["BPS_SETTINGS"] = replace(app.config["BPS_SETTINGS"], max_queued_jobs_per_tenant=2,
                                         max_running_jobs_per_tenant=1)
    body = {"dataset_id": dataset_id, "target": "species", "spec": SMALL_SPEC}
    first = client.post("/v1/jobs", json=body, headers=auth).get_json()["id"]
    with session_scope(settings.database_url) as session:
        session.get(Job, first).status = "running"
    assert client.post("/v1/jobs", json=body, headers=auth).status_code == 202
    second_running = client.post("/v1/jobs", json=body, headers=auth).get_json()["id"]
    with session_scope(settings.database_url) as session:
        session.get(Job, second_running).status = "running"
    # 2 running + 1 queued = 3 = MAX_QUEUED + MAX_RUNNING
    problem = assert_problem(client.post("/v1/jobs", json=body, headers=auth), 429, "MAX_RUNNING_JOBS_PER_TENANT")
    assert "2 running" in problem["detail"]
    bob_data = upload(client, auth_b, IRIS_LIKE_CSV).get_json()["id"]
    assert client.post("/v1/jobs", json={**body, "dataset_id": bob_data}, headers=auth_b).status_code == 202
    client.post(f"/v1/jobs/{second_running}/cancel", headers=auth)
    with session_scope(settings.database_url) as session:
        session.get(Job, second_running).status = "cancelled"
    assert client.post("/v1/jobs", json=body, headers=auth).status_code == 202
