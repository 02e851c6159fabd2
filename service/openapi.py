"""OpenAPI 3.1 built from the same pydantic models that validate requests, and /docs: a
self-contained HTML page (no external assets) listing every operation and schema."""
from __future__ import annotations

import html
import json
from typing import Any

from flask import Blueprint, Response, jsonify
from pydantic.json_schema import models_json_schema

from bps.models import JOB_STATUSES
from service import schemas

REF = "#/components/schemas/{model}"
blueprint = Blueprint("openapi", __name__)

REQUEST_MODELS = (schemas.JobCreate, schemas.PredictionCreate)
RESPONSE_MODELS = (schemas.DatasetOut, schemas.JobOut, schemas.EpochList, schemas.ModelOut,
                   schemas.PredictionOut, schemas.LiveWorker, schemas.Health, schemas.Problem)
QUERY_SCHEMAS = {
    "limit": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100},
    "offset": {"type": "integer", "minimum": 0, "maximum": 10**9, "default": 0},
    "status": {"type": "string", "enum": list(JOB_STATUSES)},
    "format": {"type": "string", "enum": ["npz"], "default": "npz"},
}
ERRORS = {"400": "Bad request", "401": "Missing or invalid API key", "404": "Not found (or another tenant's)",
          "409": "Conflict", "413": "Too large", "415": "Wrong content type", "422": "Invalid content",
          "429": "Rate limit or job quota reached (see Retry-After)",
          "503": "Database unavailable (see Retry-After)"}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": REF.format(model=name)}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": schema}}}


def _op(summary: str, status: str, response: dict | None, *, body: str | None = None, auth: bool = True,
        params: list[str] = (), multipart: bool = False, query: list[str] = ()) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "responses": {status: {"description": summary}}}
    if response is not None:
        op["responses"][status].update(_json(response))
    if body:
        op["requestBody"] = {"required": True, **_json(_ref(body))}
    if multipart:
        op["requestBody"] = {"required": True, "content": {"multipart/form-data": {"schema": {
            "type": "object", "required": ["file"],
            "properties": {"file": {"type": "string", "format": "binary"},
                           # any text (a form field is text whatever it looks like); cut to 300 characters
                           "name": {"description": "display name (default: the file name)"}}}}}}
    op["parameters"] = [{"name": p, "in": "path", "required": True, "schema": {"type": "string"}} for p in params]
    op["parameters"] += [{"name": q, "in": "query", "required": False, "schema": QUERY_SCHEMAS[q]} for q in query]
    for code, text in ERRORS.items():
        op["responses"].setdefault(code, {"description": text, "content": {
            "application/problem+json": {"schema": _ref("Problem")}}})
    op["security"] = [{"bearer": []}] if auth else []
    return op


def _paths() -> dict[str, Any]:
    ds, job, model = _ref("DatasetOut"), _ref("JobOut"), _ref("ModelOut")
    return {
        "/healthz": {"get": _op("Service health", "200", _ref("Health"), auth=False)},
        "/v1/datasets": {
            "post": _op("Upload a dataset (CSV with header, Parquet, .npz with X and y)", "201", ds, multipart=True),
            "get": _op("List datasets", "200", {"type": "array", "items": ds}, query=["limit", "offset"])},
        "/v1/datasets/{dataset_id}": {
            "get": _op("Get a dataset", "200", ds, params=["dataset_id"]),
            "delete": _op("Delete a dataset (409 while a queued/running job needs it)", "204", None,
                          params=["dataset_id"])},
        "/v1/jobs": {
            "post": _op("Submit a training job", "202", job, body="JobCreate"),
            "get": _op("List jobs, newest first", "200", {"type": "array", "items": job},
                       query=["status", "limit", "offset"])},
        "/v1/jobs/{job_id}": {"get": _op("Get a job", "200", job, params=["job_id"])},
        "/v1/jobs/{job_id}/epochs": {"get": _op("Epochs in order", "200", _ref("EpochList"), params=["job_id"])},
        "/v1/jobs/{job_id}/cancel": {"post": _op("Cancel a job", "202", job, params=["job_id"])},
        "/v1/models/{model_id}": {"get": _op("Get a model", "200", model, params=["model_id"])},
        "/v1/models/{model_id}/download": {"get": _op(
            "Weights and spec as .npz (PyTorch state_dict names)", "200", None, params=["model_id"],
            query=["format"])},
        "/v1/models/{model_id}/predictions": {"post": _op(
            "Predict synchronously (at most MAX_PREDICTION_ROWS rows, else 413)", "201", _ref("PredictionOut"),
            body="PredictionCreate", params=["model_id"])},
        "/v1/predictions/{prediction_id}": {"get": _op("Get a prediction", "200", _ref("PredictionOut"),
                                                       params=["prediction_id"])},
    }


def openapi_document() -> dict[str, Any]:
    models = [(m, "validation") for m in REQUEST_MODELS] + [(m, "serialization") for m in RESPONSE_MODELS]
    _, definitions = models_json_schema(models, ref_template=REF)
    return {
        "openapi": "3.1.0",
        "info": {"title": "Backprop Service", "version": "0.1.0",
                 "description": "Upload a dataset, submit a network spec, poll, predict."},
        "paths": _paths(),
        "components": {"schemas": definitions.get("$defs", {}),
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    }


@blueprint.get("/openapi.json")
def openapi_json():  # noqa: ANN201
    return jsonify(openapi_document())


@blueprint.get("/docs")
def docs() -> Response:
    document = openapi_document()
    rows = []
    for path, operations in document["paths"].items():
        for method, op in operations.items():
            rows.append(f"<tr><td><code>{method.upper()}</code></td><td><code>{html.escape(path)}</code></td>"
                        f"<td>{html.escape(op['summary'])}</td></tr>")
    schemas_html = "".join(
        f"<h3 id='{html.escape(name)}'>{html.escape(name)}</h3><pre>{html.escape(json.dumps(schema, indent=2))}</pre>"
        for name, schema in document["components"]["schemas"].items())
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>Backprop Service API</title>"
        "<style>body{font-family:sans-serif;max-width:70em;margin:auto}td{padding:.2em .8em}"
        "pre{background:#f4f4f4;padding:.5em}</style></head><body><h1>Backprop Service API</h1>"
        "<p>Every <code>/v1</code> call needs <code>Authorization: Bearer &lt;key&gt;</code>. Errors are "
        "<code>application/problem+json</code>. Machine-readable: <a href='/openapi.json'>/openapi.json</a>.</p>"
        f"<table>{''.join(rows)}</table><h2>Schemas</h2>{schemas_html}</body></html>"
    )
    return Response(page, mimetype="text/html")
