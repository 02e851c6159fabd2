"""GET /healthz (no auth, short broker probe), /openapi.json (3.1 from the pydantic models), /docs."""
from __future__ import annotations

import time
from dataclasses import replace

from tests.service.helpers import assert_problem


def test_healthz_reports_database_and_broker(client) -> None:  # noqa: ANN001
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok", "database": "ok", "broker": "ok", "workers": []}


def test_healthz_lists_the_live_workers_only(client, settings) -> None:  # noqa: ANN001
    from datetime import timedelta

    from bps.db import session_scope
    from bps.models import WorkerRecord, utcnow

    with session_scope(settings.database_url) as session:
        session.add(WorkerRecord(id="gpu@node1", device="gpu", queues=["gpu"], gpu_name="NVIDIA H100",
                                 gpu_memory_bytes=80 * 2**30))
        session.add(WorkerRecord(id="cpu@gone", device="cpu", queues=["cpu"],
                                 heartbeat_at=utcnow() - timedelta(hours=1)))
    workers = client.get("/healthz").get_json()["workers"]
    assert [(w["id"], w["device"], w["gpu_name"]) for w in workers] == [("gpu@node1", "gpu", "NVIDIA H100")]


def test_healthz_does_not_hang_on_a_dead_broker(settings) -> None:  # noqa: ANN001
    from service.app import create_app

    client = create_app(replace(settings, broker_url="redis://10.255.255.1:6379/0")).test_client()
    started = time.monotonic()
    body = client.get("/healthz").get_json()
    assert time.monotonic() - started < 3.0
    assert body["database"] == "ok" and body["broker"].startswith("error") and body["status"] == "degraded"


def test_healthz_reports_a_dead_database(settings) -> None:  # noqa: ANN001
    from service.app import create_app

    client = create_app(replace(settings, database_url="postgresql+psycopg://nobody@127.0.0.1:1/none")).test_client()
    response = client.get("/healthz")
    assert response.status_code == 503 and response.get_json()["database"] == "unreachable"


def test_openapi_is_built_from_the_request_models(client) -> None:  # noqa: ANN001
    document = client.get("/openapi.json").get_json()
    assert document["openapi"].startswith("3.1")
    schemas = document["components"]["schemas"]
    assert set(schemas["JobCreate"]["properties"]) == {"dataset_id", "target", "features", "input_shape", "spec",
                                                       "impute"}
    assert schemas["JobCreate"]["additionalProperties"] is False
    post_job = document["paths"]["/v1/jobs"]["post"]
    assert post_job["requestBody"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/JobCreate"}
    refs = str(document)
    for name in schemas:
        assert f"#/components/schemas/{name}" in refs or name in ("JobCreate",)
    assert "$defs" not in refs


def test_docs_page_is_self_contained(client) -> None:  # noqa: ANN001
    page = client.get("/docs").get_data(as_text=True)
    assert "/v1/models/{model_id}/predictions" in page and "http" not in page.replace("/openapi.json", "")


def test_unknown_route_and_method_are_problems(client, auth) -> None:  # noqa: ANN001
    assert_problem(client.get("/v1/unknown", headers=auth), 404)
    response = assert_problem(client.put("/healthz"), 405)
    assert response["status"] == 405
