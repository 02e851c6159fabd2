"""SQLAlchemy 2.0 typed models, the one schema that the API, the workers and Alembic share."""
from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.types import TypeDecorator
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

JOB_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
TERMINAL_STATUSES = ("succeeded", "failed", "cancelled")


def new_id() -> str:
    return str(uuid.uuid4())


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC datetimes on every backend (SQLite drops the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):  # noqa: ANN001, ANN201
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value

    def process_result_value(self, value, dialect):  # noqa: ANN001, ANN201
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON, list[Any]: JSON, bytes: LargeBinary}


class Tenant(Base):
    __tablename__ = "tenants"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApiKey(Base):
    __tablename__ = "api_keys"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)  # sha256 hex of the key
    prefix: Mapped[str] = mapped_column(String(16))  # first characters, to tell keys apart
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)


class Dataset(Base):
    __tablename__ = "datasets"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(300))
    format: Mapped[str] = mapped_column(String(16))  # csv | parquet | npz
    n_rows: Mapped[int] = mapped_column(Integer)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    columns: Mapped[list[Any]] = mapped_column(default=list)
    n_columns: Mapped[int] = mapped_column(Integer, default=0, server_default="0")  # len(columns), for lists
    shapes: Mapped[dict[str, Any] | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    chunks: Mapped[list[DatasetChunk]] = relationship(
        cascade="all, delete-orphan", passive_deletes=True, order_by="DatasetChunk.seq"
    )


class DatasetChunk(Base):
    """The uploaded bytes, chunked, so a worker on another host needs only DATABASE_URL."""

    __tablename__ = "dataset_chunks"
    dataset_id: Mapped[str] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class Job(Base):
    __tablename__ = "jobs"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    dataset_id: Mapped[str] = mapped_column(String(36), index=True)  # kept after the dataset is deleted
    status: Mapped[str] = mapped_column(String(16), default="queued", index=True)
    target: Mapped[str | None] = mapped_column(String(300), default=None)
    features: Mapped[list[Any] | None] = mapped_column(default=None)
    input_shape: Mapped[list[Any] | None] = mapped_column(default=None)
    impute: Mapped[str | None] = mapped_column(String(16), default=None)
    spec: Mapped[dict[str, Any]] = mapped_column()
    task: Mapped[str | None] = mapped_column(String(16), default=None)
    queue: Mapped[str] = mapped_column(String(16), default="cpu")
    device: Mapped[str | None] = mapped_column(String(16), default=None)  # where it ran
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    epoch: Mapped[int] = mapped_column(Integer, default=0)
    epochs: Mapped[int] = mapped_column(Integer, default=0)
    metrics: Mapped[dict[str, Any] | None] = mapped_column(default=None)
    warnings: Mapped[list[Any]] = mapped_column(default=list)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    model_id: Mapped[str | None] = mapped_column(String(36), default=None)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    attempt: Mapped[int] = mapped_column(Integer, default=0)  # fencing token of the run that owns it
    worker_id: Mapped[str | None] = mapped_column(String(200), default=None)
    heartbeat_at: Mapped[datetime | None] = mapped_column(default=None)
    published_at: Mapped[datetime | None] = mapped_column(default=None)
    time_limit_s: Mapped[float | None] = mapped_column(Float, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)
    # Why it ended: completed | early_stopping | cancelled | time_limit | diverged | error
    stop_reason: Mapped[str | None] = mapped_column(String(32), default=None)
    stop_detail: Mapped[str | None] = mapped_column(Text, default=None)  # a sentence (early stopping: which epoch)
    eta_s: Mapped[float | None] = mapped_column(Float, default=None)  # while running, once the pace is known
    best_metrics: Mapped[dict[str, Any] | None] = mapped_column(default=None)  # the epoch the model serves


class Epoch(Base):
    __tablename__ = "epochs"
    __table_args__ = (UniqueConstraint("job_id", "epoch", name="uq_epochs_job_epoch"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    epoch: Mapped[int] = mapped_column(Integer)  # 1-based
    loss: Mapped[float | None] = mapped_column(Float, default=None)
    val_loss: Mapped[float | None] = mapped_column(Float, default=None)
    accuracy: Mapped[float | None] = mapped_column(Float, default=None)
    val_accuracy: Mapped[float | None] = mapped_column(Float, default=None)
    duration_s: Mapped[float | None] = mapped_column(Float, default=None)
    learning_rate: Mapped[float | None] = mapped_column(Float, default=None)
    grad_norms: Mapped[dict[str, Any]] = mapped_column(default=dict)
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Checkpoint(Base):
    """The latest resumable state of a running job, written with its epoch row."""

    __tablename__ = "checkpoints"
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    epoch: Mapped[int] = mapped_column(Integer)
    attempt: Mapped[int] = mapped_column(Integer)
    state: Mapped[bytes] = mapped_column(LargeBinary)  # .npz, no pickle
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class Model(Base):
    __tablename__ = "models"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    job_id: Mapped[str] = mapped_column(String(36), unique=True)  # kept after the job is deleted
    task: Mapped[str] = mapped_column(String(16))  # classification | regression
    features: Mapped[list[Any] | None] = mapped_column(default=None)
    target: Mapped[str | None] = mapped_column(String(300), default=None)
    classes: Mapped[list[Any] | None] = mapped_column(default=None)
    input_shape: Mapped[list[Any] | None] = mapped_column(default=None)
    spec: Mapped[dict[str, Any]] = mapped_column()
    metrics: Mapped[dict[str, Any] | None] = mapped_column(default=None)
    preprocessing: Mapped[dict[str, Any]] = mapped_column(default=dict)
    weights: Mapped[bytes] = mapped_column(LargeBinary)  # Network.save() .npz bytes
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Kept from a job that did not complete (cancelled, time limit) after >= 1 epoch: the reason.
    partial: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    partial_reason: Mapped[str | None] = mapped_column(String(32), default=None)


class Prediction(Base):
    __tablename__ = "predictions"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    model_id: Mapped[str] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"), index=True)
    n: Mapped[int] = mapped_column(Integer)
    predictions: Mapped[list[Any]] = mapped_column()  # an asynchronous one's rows are in prediction_chunks
    probabilities: Mapped[list[Any] | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Asynchronous predictions (a dataset_id over MAX_PREDICTION_ROWS, or "async": true) run on a
    # worker like a job: claimed, fenced by `attempt`, heartbeated, republished by the reaper.
    status: Mapped[str] = mapped_column(String(16), default="succeeded", server_default="succeeded", index=True)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    progress: Mapped[float] = mapped_column(Float, default=1.0, server_default="1")
    dataset_id: Mapped[str | None] = mapped_column(String(36), default=None)
    queue: Mapped[str] = mapped_column(String(16), default="cpu", server_default="cpu")
    rows_done: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    attempt: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    worker_id: Mapped[str | None] = mapped_column(String(200), default=None)
    heartbeat_at: Mapped[datetime | None] = mapped_column(default=None)
    published_at: Mapped[datetime | None] = mapped_column(default=None)
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)


class PredictionChunk(Base):
    """Rows [seq * chunk rows, ...) of an asynchronous prediction: the network's outputs as .npy
    bytes (no pickle), decoded to labels and probabilities when downloaded."""

    __tablename__ = "prediction_chunks"
    prediction_id: Mapped[str] = mapped_column(ForeignKey("predictions.id", ondelete="CASCADE"), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    n_rows: Mapped[int] = mapped_column(Integer)
    outputs: Mapped[bytes] = mapped_column(LargeBinary)


class WorkerRecord(Base):
    """A live worker and what it can run, refreshed by its heartbeat."""

    __tablename__ = "workers"
    id: Mapped[str] = mapped_column(String(200), primary_key=True)  # celery hostname
    device: Mapped[str] = mapped_column(String(16))  # cpu | gpu
    queues: Mapped[list[Any]] = mapped_column(default=list)
    gpu_name: Mapped[str | None] = mapped_column(String(200), default=None)
    gpu_memory_bytes: Mapped[int | None] = mapped_column(BigInteger, default=None)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(default=utcnow)
