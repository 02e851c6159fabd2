"""GET /healthz (no auth, short broker probe), /openapi.json (3.1 from the pydantic models), /docs."""
from __future__ import annotations

import json
import re
import time
from dataclasses import replace
from pathlib import Path

import pytest

from tests.service.helpers import assert_problem

EXAMPLE_SPECS = Path(__file__).resolve().parents[2] / "examples" / "specs"


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


def test_healthz_opens_the_embedded_broker_file(settings, tmp_path) -> None:  # noqa: ANN001
    import sqlite3
    from contextlib import closing

    from service.app import create_app

    missing_dir = replace(settings, broker_url=f"sqla+sqlite:///{tmp_path}/no-such-dir/broker.db")
    body = create_app(missing_dir).test_client().get("/healthz").get_json()
    assert body["database"] == "ok" and body["broker"].startswith("error") and body["status"] == "degraded"

    assert create_app(settings).test_client().get("/healthz").get_json()["broker"] == "ok"
    with closing(sqlite3.connect(tmp_path / "broker.db")) as broker:  # made by the WAL connector
        assert broker.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


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


def test_openapi_is_a_valid_3_1_document_with_ids_tags_and_examples(client) -> None:  # noqa: ANN001
    from openapi_spec_validator import validate

    document = client.get("/openapi.json").get_json()
    validate(document)
    operations = [op for item in document["paths"].values() for op in item.values()]
    ids = [op["operationId"] for op in operations]
    assert len(ids) == len(set(ids)) and all(re.fullmatch(r"[a-z][A-Za-z]+", i) for i in ids)
    declared_tags = {tag["name"] for tag in document["tags"]}
    assert all(op["tags"] and set(op["tags"]) <= declared_tags for op in operations)
    for op in operations:
        for media in op.get("requestBody", {}).get("content", {}).values():
            assert media["examples"], op["operationId"]
    bare = [name for name, schema in document["components"]["schemas"].items() if "properties" not in schema]
    assert bare == [], "every published model lists its fields (a serializer's return type can hide them)"


def spec_validator(document: dict):  # noqa: ANN201
    """A JSON Schema validator of the published NetworkSpec (refs resolved in the document)."""
    import jsonschema
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT202012

    registry = Registry().with_resource("urn:openapi", Resource.from_contents(document, DRAFT202012))
    return jsonschema.Draft202012Validator({"$ref": "urn:openapi#/components/schemas/NetworkSpec"},
                                           registry=registry)


def test_the_published_spec_schema_is_the_validators(client) -> None:  # noqa: ANN001
    """Every example spec and request example validates against the published schema and with
    validate_spec; what the schema refuses, validate_spec refuses too."""
    from worker.engine.spec import SpecError, validate_spec

    document = client.get("/openapi.json").get_json()
    assert document["components"]["schemas"]["JobCreate"]["properties"]["spec"]["$ref"].endswith("/NetworkSpec")
    for answer in ("JobOut", "ModelOut"):  # answers carry the normalised spec, a NetworkSpec too
        schema = document["components"]["schemas"][answer]
        assert schema["properties"]["spec"]["allOf"] == [{"$ref": "#/components/schemas/NetworkSpec"}]
        assert {"id", "spec", "created_at"} <= set(schema["required"])
    layers = document["components"]["schemas"]["NetworkSpec"]["properties"]["layers"]["items"]["anyOf"][0]
    assert layers["discriminator"]["propertyName"] == "type" and "lstm" in layers["discriminator"]["mapping"]
    validator = spec_validator(document)
    examples = [json.loads(path.read_text()) for path in EXAMPLE_SPECS.glob("*.json")]
    examples += [e["value"]["spec"] for e in document["paths"]["/v1/jobs"]["post"]["requestBody"]["content"][
        "application/json"]["examples"].values()]
    assert len(examples) >= 10
    for spec in examples:
        validator.validate(spec)
        validate_spec(spec)
    refused = [{"layers": []}, {"layers": [{"type": "dense2"}]}, {"layers": [{"type": "conv2d", "filters": 2}]},
               {"layers": ["dense"], "optimizer": {"type": "adam", "lr": 0.1}},
               {"layers": ["dense"], "lr_schedule": {"type": "step"}}, {"layers": ["dense"], "epochs": 0},
               {"layers": [{"type": "conv2d", "filters": 1, "kernel_size": [3, 3, 3]}]}]
    for spec in refused:
        assert not validator.is_valid(spec), spec
        with pytest.raises(SpecError):
            validate_spec(spec)


def test_docs_is_swagger_ui_served_from_the_package(client) -> None:  # noqa: ANN001
    for path in ("/docs", "/docs/"):
        response = client.get(path)
        assert response.status_code == 200 and response.mimetype == "text/html"
        page = response.get_data(as_text=True)
        assert "SwaggerUIBundle" in page and '"url": "/openapi.json"' in page
        assert "http://" not in page and "https://" not in page, "no CDN, no outside validator"
    assets = {"/docs/swagger-ui-bundle.js": "text/javascript", "/docs/swagger-ui-standalone-preset.js":
              "text/javascript", "/docs/swagger-ui.css": "text/css", "/docs/index.css": "text/css"}
    for path, mimetype in assets.items():
        response = client.get(path)
        assert response.status_code == 200 and response.mimetype == mimetype and len(response.data) > 100, path
    assert "SwaggerUIBundle" in client.get("/docs/swagger-ui-bundle.js").get_data(as_text=True)


def test_unknown_route_and_method_are_problems(client, auth) -> None:  # noqa: ANN001
    assert_problem(client.get("/v1/unknown", headers=auth), 404)
    response = assert_problem(client.put("/healthz"), 405)
    assert response["status"] == 405


def test_openapi_documents_async_predictions_event_resumption_and_health(client) -> None:  # noqa: ANN001
    paths = client.get("/openapi.json").get_json()["paths"]
    predict = paths["/v1/models/{model_id}/predictions"]["post"]["responses"]
    assert {"201", "202"} <= set(predict)
    events = paths["/v1/jobs/{job_id}/events"]["get"]["parameters"]
    assert {"name": "Last-Event-ID", "in": "header", "required": False, "schema": {"type": "string"}} in events
    assert set(paths["/healthz"]["get"]["responses"]) == {"200", "503"}
