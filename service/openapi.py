"""OpenAPI 3.1 built from the same pydantic models that validate requests (the spec's layers,
optimizers and schedules as discriminated unions on `type`), and /docs: Swagger UI served
from the flask-swagger-ui package's own assets (no CDN).

An operation is one `Operation(...)` line in OPERATIONS; its path parameters come from the
path, a request model's examples from REQUEST_EXAMPLES, the error responses from ERRORS."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, current_app, jsonify
from flask_swagger_ui import get_swaggerui_blueprint
from pydantic.json_schema import models_json_schema

from bps.models import JOB_STATUSES
from service import schemas
from service.openapi_examples import MULTIPART_EXAMPLES, REQUEST_EXAMPLES

REF = "#/components/schemas/{model}"
blueprint = Blueprint("openapi", __name__)
# validatorUrl None: Swagger UI would otherwise send the document to an outside validator.
blueprint.register_blueprint(get_swaggerui_blueprint("/docs", "/openapi.json", config={
    "app_name": "Backprop Service API", "validatorUrl": None, "persistAuthorization": True,
    "displayOperationId": True, "defaultModelsExpandDepth": 0, "oauth2RedirectUrl": "/docs/oauth2-redirect.html"}))

REQUEST_MODELS = (schemas.JobCreate, schemas.PredictionCreate, schemas.EvaluationCreate)
RESPONSE_MODELS = (schemas.DatasetOut, schemas.DatasetSummary, schemas.JobOut, schemas.EpochList, schemas.ModelOut, schemas.ModelSummary,
                   schemas.PredictionOut, schemas.PredictionSummary, schemas.EvaluationOut, schemas.LiveWorker,
                   schemas.Health, schemas.Problem)
QUERY_SCHEMAS = {
    "limit": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100},
    "offset": {"type": "integer", "minimum": 0, "maximum": 10**9, "default": 0},
    "status": {"type": "string", "enum": list(JOB_STATUSES)},
    "since": {"type": "integer", "minimum": 0, "maximum": 10**9, "default": 0,
              "description": "only the epochs after this one"},
    "limit:all": {"type": "integer", "minimum": 1, "maximum": 10**9, "description": "default: every epoch"},
    "model_id": {"type": "string", "description": "only this model's predictions"},
    "format": {"type": "string", "enum": ["npz", "onnx"], "default": "npz"},
    "format:rows": {"type": "string", "enum": ["csv", "parquet"], "default": "csv"},  # parameter "format"
}
ERRORS = {"400": "Bad request", "401": "Missing or invalid API key", "404": "Not found (or another tenant's)",
          "409": "Conflict", "413": "Too large", "415": "Wrong content type", "422": "Invalid content",
          "429": "Rate limit or job quota reached (see Retry-After)",
          "503": "Database unavailable (see Retry-After)"}
LIST_HEADERS = {  # on every list (Operation.paged)
    "X-Total-Count": {"description": "Rows in the whole list", "schema": {"type": "integer"}},
    "Link": {"description": "RFC 8288 links to the first, prev, next and last pages", "schema": {"type": "string"}}}
TAGS = [
    {"name": "datasets", "description": "Upload CSV (with a header row), Parquet or .npz; column profiles"},
    {"name": "jobs", "description": "Training jobs: submit a network spec, poll, read epochs, cancel"},
    {"name": "models", "description": "Trained models: metadata, weights, predictions"},
    {"name": "predictions", "description": "Stored predictions"},
    {"name": "service", "description": "Health and this document (no API key)"},
]


def ref(name: str) -> dict[str, str]:
    return {"$ref": REF.format(model=name)}


def array_of(name: str) -> dict[str, Any]:
    return {"type": "array", "items": ref(name)}


@dataclass(frozen=True)
class Operation:
    """One HTTP operation. `response` is a JSON schema (`ref(...)`, `array_of(...)`) or None for
    an empty body; `media_type` is the response's content type; `body` names a request model."""

    method: str
    path: str
    operation_id: str
    tag: str
    summary: str
    status: str
    response: dict[str, Any] | None = None
    body: str | None = None
    multipart: bool = False
    query: tuple[str, ...] = ()
    auth: bool = True
    media_type: str = "application/json"
    paged: bool = False
    also: tuple[str, ...] = ()  # further success statuses with the same body
    headers: tuple[str, ...] = ()  # optional request headers
    errors: bool = True

    def document(self) -> dict[str, Any]:
        success: dict[str, Any] = {"description": self.summary}
        if self.response is not None:
            success["content"] = {self.media_type: {"schema": self.response}}
        if self.paged:
            success["headers"] = LIST_HEADERS
        op: dict[str, Any] = {"operationId": self.operation_id, "tags": [self.tag], "summary": self.summary,
                              "responses": {self.status: success}}
        for status in self.also:
            op["responses"][status] = success
        if self.body:
            op["requestBody"] = {"required": True, "content": {"application/json": {
                "schema": ref(self.body), "examples": REQUEST_EXAMPLES[self.body]}}}
        if self.multipart:
            op["requestBody"] = {"required": True, "content": {"multipart/form-data": {
                "schema": UPLOAD_FORM, "examples": MULTIPART_EXAMPLES}}}
        op["parameters"] = [{"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
                            for p in re.findall(r"{(\w+)}", self.path)]
        op["parameters"] += [{"name": q.split(":")[0], "in": "query", "required": False, "schema": QUERY_SCHEMAS[q]}
                             for q in self.query]
        op["parameters"] += [{"name": h, "in": "header", "required": False, "schema": {"type": "string"}}
                             for h in self.headers]
        for code, text in ERRORS.items() if self.errors else ():
            op["responses"].setdefault(code, {"description": text, "content": {
                "application/problem+json": {"schema": ref("Problem")}}})
        op["security"] = [{"bearer": []}] if self.auth else []
        return op


UPLOAD_FORM = {"type": "object", "required": ["file"], "properties": {
    "file": {"type": "string", "format": "binary",
             "description": "CSV with a header row (comma, semicolon or tab separated), Parquet, or .npz "
                            "with arrays X and y"},
    # any text (a form field is text whatever it looks like); cut to 300 characters
    "name": {"description": "display name (default: the file name)"}}}

OPERATIONS = [
    Operation("get", "/healthz", "getHealth", "service", "Service health", "200", ref("Health"), auth=False,
              also=("503",), errors=False),
    Operation("post", "/v1/datasets", "uploadDataset", "datasets",
              "Upload a dataset (CSV with header, Parquet, .npz with X and y)", "201", ref("DatasetOut"),
              multipart=True),
    Operation("get", "/v1/datasets", "listDatasets", "datasets", "List datasets, newest first (no column profiles)",
              "200", array_of("DatasetSummary"), query=("limit", "offset"), paged=True),
    Operation("get", "/v1/datasets/{dataset_id}", "getDataset", "datasets", "Get a dataset", "200",
              ref("DatasetOut")),
    Operation("delete", "/v1/datasets/{dataset_id}", "deleteDataset", "datasets",
              "Delete a dataset (409 while a queued/running job needs it)", "204"),
    Operation("post", "/v1/jobs", "submitJob", "jobs", "Submit a training job", "202", ref("JobOut"),
              body="JobCreate"),
    Operation("get", "/v1/jobs", "listJobs", "jobs", "List jobs, newest first", "200", array_of("JobOut"),
              query=("status", "limit", "offset"), paged=True),
    Operation("get", "/v1/jobs/{job_id}", "getJob", "jobs", "Get a job", "200", ref("JobOut")),
    Operation("delete", "/v1/jobs/{job_id}", "deleteJob", "jobs",
              "Delete a finished job and its epochs (409 while queued/running: cancel first); its model stays", "204"),
    Operation("get", "/v1/jobs/{job_id}/epochs", "listEpochs", "jobs", "Epochs in order (since=N: after epoch N)",
              "200", ref("EpochList"), query=("since", "limit:all", "offset"), paged=True),
    Operation("get", "/v1/jobs/{job_id}/events", "jobEvents", "jobs",
              "Server-sent events until the job ends: `event: status` (the Job) at each status change, `event: "
              "epoch` (the Epoch) as each is recorded; send Last-Event-ID to resume; 503 beyond MAX_EVENT_STREAMS",
              "200", {"type": "string"}, media_type="text/event-stream", headers=("Last-Event-ID",)),
    Operation("post", "/v1/jobs/{job_id}/cancel", "cancelJob", "jobs", "Cancel a job", "202", ref("JobOut")),
    Operation("get", "/v1/models", "listModels", "models", "List models, newest first (no features or spec)", "200",
              array_of("ModelSummary"), query=("limit", "offset"), paged=True),
    Operation("get", "/v1/models/{model_id}", "getModel", "models", "Get a model", "200", ref("ModelOut")),
    Operation("delete", "/v1/models/{model_id}", "deleteModel", "models", "Delete a model and its predictions",
              "204"),
    Operation("post", "/v1/models/{model_id}/evaluations", "evaluateModel", "models",
              "Score the model on held-out rows with their truth: loss; accuracy and a confusion matrix, or R², MAE "
              "and RMSE (at most MAX_PREDICTION_ROWS rows)", "200", ref("EvaluationOut"), body="EvaluationCreate"),
    Operation("get", "/v1/models/{model_id}/download", "downloadModel", "models",
              "Weights and spec as .npz (PyTorch state_dict names), or an ONNX graph (format=onnx)", "200",
              query=("format",)),
    Operation("post", "/v1/models/{model_id}/predictions", "predict", "models",
              "Predict synchronously (201, at most MAX_PREDICTION_ROWS instances or records, else 413); a dataset "
              "over MAX_PREDICTION_ROWS rows, or \"async\": true, is queued for the workers (202)", "201",
              ref("PredictionOut"), body="PredictionCreate", also=("202",)),
    Operation("get", "/v1/predictions", "listPredictions", "predictions", "List predictions, newest first (no rows)",
              "200", array_of("PredictionSummary"), query=("model_id", "limit", "offset"), paged=True),
    Operation("get", "/v1/predictions/{prediction_id}", "getPrediction", "predictions", "Get a prediction", "200",
              ref("PredictionOut")),
    Operation("delete", "/v1/predictions/{prediction_id}", "deletePrediction", "predictions", "Delete a prediction",
              "204"),
    Operation("get", "/v1/predictions/{prediction_id}/download", "downloadPrediction", "predictions",
              "Every row as CSV or Parquet: prediction, probability_<label> per class (409 until succeeded)", "200",
              query=("format:rows",), media_type="text/csv"),
]


def _paths() -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for operation in OPERATIONS:
        paths.setdefault(operation.path, {})[operation.method] = operation.document()
    return paths


def openapi_document() -> dict[str, Any]:
    models = [(m, "validation") for m in REQUEST_MODELS] + [(m, "serialization") for m in RESPONSE_MODELS]
    _, definitions = models_json_schema(models, ref_template=REF)
    return {
        "openapi": "3.1.0",
        "info": {"title": "Backprop Service", "version": "0.1.0",
                 "description": "Upload a dataset, submit a network spec, poll, predict. Every /v1 call needs "
                                "`Authorization: Bearer <key>`; errors are application/problem+json."},
        "tags": TAGS,
        "paths": _paths(),
        "components": {"schemas": definitions.get("$defs", {}),
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    }


@blueprint.get("/openapi.json")
def openapi_json():  # noqa: ANN201
    return jsonify(openapi_document())


@blueprint.get("/docs")
def docs():  # noqa: ANN201
    """The Swagger UI page at /docs as well as /docs/ (its assets are under /docs/)."""
    return current_app.view_functions["openapi.swagger_ui.show"]()
