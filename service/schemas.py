"""Pydantic 2 models: they validate requests and they generate the OpenAPI document (their
shared base classes and field types: service/schema_types.py)."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, SerializerFunctionWrapHandler, StrictBool, model_serializer, model_validator

from service.schema_types import (
    MAX_FEATURES,
    MAX_INSTANCES,
    NormalisedSpec,
    ResponseModel,
    SpecObject,
    StrictModel,
    UTCDatetime,
)


# ---- requests ---------------------------------------------------------------------------
class JobCreate(StrictModel):
    dataset_id: str = Field(min_length=1, max_length=64)
    target: str | None = Field(default=None, min_length=1, max_length=300,
                               description="CSV/Parquet: the label column (required there); omit for .npz")
    features: list[str] | None = Field(default=None, min_length=1, max_length=MAX_FEATURES,
                                       description="Input columns, in order; default: every other column")
    input_shape: list[int] | None = Field(default=None, min_length=1, max_length=8,
                                          description="Per-sample shape, e.g. [1, 8, 8] or [T, F]")
    spec: SpecObject = Field(description="The network spec (CONTRACT §3); checked against the dataset before "
                             "the job is queued, every problem named in the 422")
    impute: Literal["mean", "median", "zero"] | None = Field(
        default=None,
        description="Fill missing/non-finite feature values with the training column's mean, median or 0 "
        "(string features: no category). Without it such values make the job a 422.",
    )

    @model_validator(mode="after")
    def _positive_shape(self) -> JobCreate:
        if self.input_shape is not None and any(not 1 <= d <= 1_000_000 for d in self.input_shape):
            raise ValueError("input_shape entries must be between 1 and 1000000")
        return self


class PredictionCreate(StrictModel):
    instances: list[Any] | None = Field(default=None, min_length=1, max_length=MAX_INSTANCES,
                                        description="Rows of feature values in the model's feature order, "
                                        "or nested arrays of input_shape")
    records: list[dict[str, Any]] | None = Field(default=None, min_length=1, max_length=MAX_INSTANCES,
                                                 description="Rows as {column: value}")
    dataset_id: str | None = Field(default=None, min_length=1, max_length=64,
                                   description="Predict every row of one of your datasets")
    run_async: StrictBool = Field(default=False, alias="async",
                            description="With dataset_id: run on a worker (202), as a dataset over "
                            "MAX_PREDICTION_ROWS always does; fetch the rows from /download")

    @model_validator(mode="after")
    def _exactly_one_source(self) -> PredictionCreate:
        given = [n for n in ("instances", "records", "dataset_id") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of instances, records or dataset_id (got {given or 'none'})")
        return self


# ---- responses --------------------------------------------------------------------------
class ColumnProfile(BaseModel):
    name: str
    dtype: str
    kind: str | None = None
    missing: int
    non_finite: int | None = None
    min: float | None = None
    max: float | None = None
    mean: float | None = None
    std: float | None = None
    n_unique: int | None = None
    integral: bool | None = None


class DatasetSummary(ResponseModel):
    """A list entry: a Dataset without its column profiles."""

    id: str
    name: str
    format: str
    n_rows: int
    n_columns: int = Field(description="Columns profiled (CSV/Parquet: the file's columns; .npz: 2, X and y)")
    size_bytes: int
    sha256: str
    created_at: UTCDatetime
    shapes: dict[str, list[int]] | None = None


class DatasetOut(DatasetSummary):
    columns: list[ColumnProfile]


class JobOut(ResponseModel):
    id: str
    status: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    dataset_id: str
    target: str | None = None
    features: list[str] | None = None
    input_shape: list[int] | None = None
    impute: str | None = None
    spec: NormalisedSpec
    task: str | None = None
    queue: str
    progress: float
    epoch: int
    epochs: int
    device: str | None = None
    created_at: UTCDatetime
    started_at: UTCDatetime | None = None
    finished_at: UTCDatetime | None = None
    error: str | None = None
    model_id: str | None = None
    metrics: dict[str, Any] | None = Field(default=None, description="The latest epoch's metrics")
    best_metrics: dict[str, Any] | None = Field(
        default=None, description="The metrics of the epoch the model serves (with its `epoch`): the best one with "
        "early_stopping.restore_best, else the last; set when the job keeps a model")
    warnings: list[Any] = Field(default_factory=list)
    cancel_requested: bool = False
    stop_reason: Literal["completed", "early_stopping", "cancelled", "time_limit", "diverged", "error"] | None = Field(
        default=None, description="Why the job ended (null until it ends)")
    stop_detail: str | None = Field(default=None, description="A sentence: e.g. which epoch early stopping kept")
    eta_s: float | None = Field(default=None, description="Seconds left at the pace so far, while running; "
                                "omitted when unknown (queued, before the first batch, finished)")

    # No return annotation: with one, pydantic would publish that type instead of the Job's fields.
    @model_serializer(mode="wrap")
    def _omit_unknown_eta(self, handler: SerializerFunctionWrapHandler):  # noqa: ANN202
        body = handler(self)
        if body.get("eta_s") is None:
            body.pop("eta_s", None)
        return body


class EpochOut(ResponseModel):
    epoch: int
    loss: float | None = None
    val_loss: float | None = None
    accuracy: float | None = None
    val_accuracy: float | None = None
    duration_s: float | None = None
    learning_rate: float | None = None
    grad_norms: dict[str, float | None] = Field(default_factory=dict)


class EpochList(BaseModel):
    epochs: list[EpochOut]


class ModelSummary(ResponseModel):
    """A list entry: a Model without its features, input_shape and spec (a wide model's
    feature names alone can be megabytes)."""

    id: str
    job_id: str
    task: str
    target: str | None = None
    classes: list[Any] | None = None
    metrics: dict[str, Any] | None = Field(default=None, description="The metrics of the epoch whose weights it holds")
    created_at: UTCDatetime
    partial: bool = Field(default=False, description="Kept from a job that was cancelled or reached its time limit")
    partial_reason: Literal["cancelled", "time_limit"] | None = None


class ModelOut(ModelSummary):
    features: list[str] | None = None
    input_shape: list[int] | None = None
    spec: NormalisedSpec


class PredictionSummary(ResponseModel):
    """A list entry: a Prediction without its rows."""

    id: str
    model_id: str
    created_at: UTCDatetime
    n: int
    status: Literal["queued", "running", "succeeded", "failed"] = Field(
        description="queued | running | succeeded | failed (synchronous: succeeded)")
    error: str | None = None
    progress: float = Field(description="Share of the rows predicted, 0..1")
    dataset_id: str | None = None
    started_at: UTCDatetime | None = None
    finished_at: UTCDatetime | None = None


class PredictionOut(PredictionSummary):
    predictions: list[Any] = Field(description="Empty for an asynchronous prediction: GET its /download")
    probabilities: list[list[float | None]] | None = None


class EvaluationCreate(StrictModel):
    dataset_id: str | None = Field(default=None, min_length=1, max_length=64,
                                   description="A held-out dataset of yours holding the model's features and target")
    instances: list[Any] | None = Field(default=None, min_length=1, max_length=MAX_INSTANCES,
                                        description="Rows as in predictions' instances (with targets)")
    targets: list[Any] | None = Field(default=None, min_length=1, max_length=MAX_INSTANCES,
                                      description="The true label or value of each instance, as uploaded")

    @model_validator(mode="after")
    def _one_source(self) -> EvaluationCreate:
        rows = self.instances is not None or self.targets is not None
        if (self.dataset_id is not None) == rows:
            raise ValueError("give either dataset_id, or instances with targets")
        if rows and (self.instances is None or self.targets is None or len(self.instances) != len(self.targets)):
            raise ValueError("instances and targets must both be given, one target per instance")
        return self


class ConfusionMatrix(BaseModel):
    labels: list[Any] = Field(description="The model's classes, as uploaded")
    matrix: list[list[int]] = Field(description="matrix[i][j]: rows whose true label is labels[i], predicted labels[j]")


class EvaluationOut(BaseModel):
    """Classification answers accuracy and confusion_matrix; regression r2, mae and rmse
    (averaged over target columns)."""

    model_id: str
    dataset_id: str | None = None
    task: str
    n: int
    loss_name: str = Field(description="The spec's loss, computed as the epochs' val_loss is")
    loss: float
    accuracy: float | None = None
    confusion_matrix: ConfusionMatrix | None = None
    r2: float | None = None
    mae: float | None = None
    rmse: float | None = None


class LiveWorker(BaseModel):
    id: str
    device: str
    queues: list[str]
    gpu_name: str | None = None
    gpu_memory_bytes: int | None = None
    heartbeat_at: str


class Health(BaseModel):
    status: str
    database: str
    broker: str
    workers: list[LiveWorker] = []


class ErrorItem(BaseModel):
    loc: list[str | int]
    msg: str


class Problem(BaseModel):
    type: str = "about:blank"
    title: str
    status: int
    detail: str
    errors: list[ErrorItem] = Field(default_factory=list)
    max_rows: int | None = Field(None, description="in a 413 for too many rows: the most a synchronous prediction "
                                                   "takes (MAX_PREDICTION_ROWS)")
