"""The runner's database writes: short transactions, ids not objects, every write to a running
job fenced by `WHERE id = :job AND attempt = :attempt AND status = 'running'`, so a run that
lost its job (cancelled, taken over by another worker) can change nothing.

An epoch row and the checkpoint after it are written in ONE fenced transaction, so a run that
takes over resumes exactly after the last recorded epoch. A write that fails because the
database connection dropped is retried (`with_db_retries`): a killed connection costs a
retry, never the job."""
from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

from sqlalchemy import and_, bindparam, delete, func, or_, select, update

from bps.config import Settings
from bps.db import connection_scope, is_database_unavailable, session_scope
from bps.models import Checkpoint, Epoch, Job, Model, new_id, utcnow
from bps.numbers import finite_or_none

log = logging.getLogger(__name__)
T = TypeVar("T")
# Seconds between tries of a write whose connection failed (about 30 s in all).
DB_RETRY_DELAYS_S = (0.2, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0)


@dataclass(frozen=True)
class JobSnapshot:
    """What the runner needs of a job, read once after the claim."""

    id: str
    tenant_id: str
    attempt: int
    dataset_id: str
    target: str | None
    features: list[Any] | None
    input_shape: list[Any] | None
    impute: str | None
    spec: dict[str, Any]
    task: str | None
    queue: str
    time_limit_s: float | None
    resume_epoch: int = 0  # epochs already recorded (and checkpointed) by earlier attempts
    checkpoint: bytes | None = None  # .npz training state after `resume_epoch`
    elapsed_s: float = 0.0  # training time of the kept epochs (counts against the time limit)


def with_db_retries(action: Callable[..., T], *args: Any, what: str = "database write", **kwargs: Any) -> T:
    """`action(*args, **kwargs)`, tried again after a transient database error. Every action
    here is one transaction, rolled back on error, so trying again is safe."""
    for delay in DB_RETRY_DELAYS_S:
        try:
            return action(*args, **kwargs)
        except Exception as exc:
            if not is_database_unavailable(exc):
                raise
            log.warning("%s failed (%s); trying again in %.1f s", what, exc.__class__.__name__, delay)
            time.sleep(delay)
    return action(*args, **kwargs)


def fence(table: Any, row_id: str, attempt: int):  # noqa: ANN201
    """A running row (Job or asynchronous Prediction) still owned by run `attempt`."""
    return and_(table.id == row_id, table.attempt == attempt, table.status == "running")


def _fence(job_id: str, attempt: int):  # noqa: ANN202
    return fence(Job, job_id, attempt)


def takeover_condition(table: Any, settings: Settings, now: Any):  # noqa: ANN201
    """A running row whose worker has been silent for `job_heartbeat_timeout_s`, attempts left."""
    stale_before = now - timedelta(seconds=settings.job_heartbeat_timeout_s)
    return and_(table.status == "running", table.heartbeat_at < stale_before, table.attempt < settings.job_max_attempts)


def claim_job(settings: Settings, job_id: str, worker_id: str) -> JobSnapshot | None:
    """Take the job with ONE conditional UPDATE: a queued job that is not being cancelled, or a
    running one whose worker has been silent for `job_heartbeat_timeout_s` (takeover). None
    when another run owns it, it was cancelled or finished, or it does not exist."""
    now = utcnow()
    claimable = or_(and_(Job.status == "queued", Job.cancel_requested.is_(False)),
                    takeover_condition(Job, settings, now))
    with session_scope(settings.database_url) as session:
        claimed = session.execute(
            update(Job)
            .where(Job.id == job_id, claimable)
            .values(status="running", attempt=Job.attempt + 1, worker_id=worker_id,
                    started_at=now, heartbeat_at=now, progress=0.0, epoch=0, error=None, eta_s=None)
            .execution_options(synchronize_session=False)
        ).rowcount
        if claimed != 1:
            return None
        job = session.get(Job, job_id)
        checkpoint = session.get(Checkpoint, job_id)
        resume_epoch = checkpoint.epoch if checkpoint is not None else 0
        # Epochs after the checkpoint cannot exist (both are written in one transaction); the
        # delete keeps "each epoch exactly once" true even for rows written before checkpoints.
        session.execute(delete(Epoch).where(Epoch.job_id == job_id, Epoch.epoch > resume_epoch))
        elapsed = session.scalar(select(func.coalesce(func.sum(Epoch.duration_s), 0.0))
                                 .where(Epoch.job_id == job_id)) or 0.0
        total = int(job.spec.get("epochs", 0) or 0)
        session.execute(update(Job).where(Job.id == job_id).values(
            epochs=total, epoch=resume_epoch, progress=min(resume_epoch / max(total, 1), 1.0)))
        return JobSnapshot(
            id=job.id, tenant_id=job.tenant_id, attempt=job.attempt, dataset_id=job.dataset_id,
            target=job.target, features=job.features, input_shape=job.input_shape, impute=job.impute,
            spec=dict(job.spec), task=job.task, queue=job.queue, time_limit_s=job.time_limit_s,
            resume_epoch=resume_epoch, checkpoint=checkpoint.state if checkpoint is not None else None,
            elapsed_s=float(elapsed),
        )


def cancel_if_queued_and_requested(settings: Settings, job_id: str) -> None:
    """A queued job whose cancel was requested never starts: it ends cancelled here."""
    with session_scope(settings.database_url) as session:
        session.execute(
            update(Job)
            .where(Job.id == job_id, Job.status == "queued", Job.cancel_requested.is_(True))
            .values(status="cancelled", finished_at=utcnow(), stop_reason="cancelled",
                    stop_detail="cancelled before it started")
            .execution_options(synchronize_session=False)
        )


def set_device(settings: Settings, job_id: str, attempt: int, device: str) -> bool:
    with session_scope(settings.database_url) as session:
        result = session.execute(update(Job).where(_fence(job_id, attempt)).values(device=device))
        return result.rowcount == 1


EPOCH_METRICS = ("loss", "val_loss", "accuracy", "val_accuracy", "learning_rate")


def epoch_metrics(record: dict[str, Any]) -> dict[str, float | None]:
    return {key: finite_or_none(record.get(key)) for key in EPOCH_METRICS}


def record_epoch(settings: Settings, job: JobSnapshot, record: dict[str, Any],
                 checkpoint: bytes | None = None, eta_s: float | None = None) -> tuple[bool, bool]:
    """Insert one Epoch row, replace the job's checkpoint with `checkpoint` (the training state
    after this epoch) and move the job's progress: one fenced transaction, so either all of it
    is written or, when this attempt no longer owns the job, none of it.
    Returns (still_owned, cancel_requested)."""
    epoch = int(record["epoch"])
    total = max(int(job.spec.get("epochs", epoch) or epoch), 1)
    metrics = epoch_metrics(record)
    values = {"p_job": job.id, "p_attempt": job.attempt, "p_epoch": epoch, "p_progress": min(epoch / total, 1.0),
              "p_metrics": metrics, "p_now": utcnow(), "p_duration": finite_or_none(record.get("duration_s")),
              "p_norms": {str(k): finite_or_none(v) for k, v in (record.get("grad_norms") or {}).items()},
              "p_state": checkpoint, "p_eta": finite_or_none(eta_s), **{f"p_{k}": v for k, v in metrics.items()}}
    with connection_scope(settings.database_url) as connection:
        progress, insert_epoch, upsert_checkpoint = _epoch_statements(connection.dialect.name)
        # RETURNING reads cancel_requested in the same statement (PostgreSQL, SQLite >= 3.35).
        cancel = connection.execute(progress, values).scalar()
        if cancel is None:
            connection.rollback()
            return False, False
        connection.execute(insert_epoch, values)
        if checkpoint is not None:
            connection.execute(upsert_checkpoint, values)
        return True, bool(cancel)


@functools.cache
def _epoch_statements(dialect: str) -> tuple[Any, Any, Any]:
    """record_epoch's three statements, built once per dialect with bind parameters: building
    and cache-keying them per epoch cost about 1 ms of Python, five times the database's own
    work, and a job may have thousands of short epochs (bench service: the per-epoch line)."""
    insert = _dialect_insert(dialect)
    p = bindparam
    progress = update(Job).where(Job.id == p("p_job"), Job.attempt == p("p_attempt"), Job.status == "running").values(
        epoch=p("p_epoch"), progress=p("p_progress"), metrics=p("p_metrics"), heartbeat_at=p("p_now"),
        eta_s=p("p_eta"),
    ).returning(Job.cancel_requested)
    # ON CONFLICT DO NOTHING: a retry after a commit whose answer was lost adds no second row.
    insert_epoch = insert(Epoch).values(
        job_id=p("p_job"), epoch=p("p_epoch"), attempt=p("p_attempt"), grad_norms=p("p_norms"),
        duration_s=p("p_duration"), created_at=p("p_now"), **{k: p(f"p_{k}") for k in EPOCH_METRICS},
    ).on_conflict_do_nothing(index_elements=["job_id", "epoch"])
    checkpoint = {"epoch": p("p_epoch"), "attempt": p("p_attempt"), "state": p("p_state"), "updated_at": p("p_now")}
    # One upsert, without reading the old blob back.
    upsert_checkpoint = insert(Checkpoint).values(job_id=p("p_job"), **checkpoint).on_conflict_do_update(
        index_elements=["job_id"], set_=checkpoint)
    return progress, insert_epoch, upsert_checkpoint


def _dialect_insert(dialect: str) -> Any:
    """The dialect's INSERT, which has on_conflict_do_nothing/_update (PostgreSQL and SQLite)."""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert  # noqa: PLC0415
    else:
        from sqlalchemy.dialects.sqlite import insert  # noqa: PLC0415
    return insert


def load_checkpoint_epoch(settings: Settings, job_id: str) -> int | None:
    with session_scope(settings.database_url) as session:
        return session.scalar(select(Checkpoint.epoch).where(Checkpoint.job_id == job_id))


def run_flags(settings: Settings, job_id: str, attempt: int) -> tuple[bool, bool]:
    """(still_owned, cancel_requested), read only: one indexed SELECT, polled every
    CANCEL_POLL_INTERVAL_S while the job trains, so a cancel stops it at the next batch."""
    with connection_scope(settings.database_url) as connection:
        row = connection.execute(_flags_statement(), {"p_job": job_id}).first()
    if row is None:
        return False, False
    return (row.attempt == attempt and row.status == "running"), bool(row.cancel_requested)


@functools.cache
def _flags_statement() -> Any:
    return select(Job.attempt, Job.status, Job.cancel_requested).where(Job.id == bindparam("p_job"))


def heartbeat(settings: Settings, job_id: str, attempt: int, progress: float | None = None,
              eta_s: float | None = None) -> tuple[bool, bool]:
    """Refresh heartbeat_at (and, given, the progress within the epoch and the ETA).
    Returns (still_owned, cancel_requested)."""
    values: dict[str, Any] = {"heartbeat_at": utcnow()}
    if progress is not None:
        values.update(progress=progress, eta_s=finite_or_none(eta_s))
    with session_scope(settings.database_url) as session:
        owned = session.execute(update(Job).where(_fence(job_id, attempt)).values(**values)).rowcount == 1
        cancel = session.scalar(select(Job.cancel_requested).where(Job.id == job_id))
        return owned, bool(cancel)


def finish_job(settings: Settings, job_id: str, attempt: int, status: str, **values: Any) -> bool:
    """End a running job (failed/cancelled/succeeded) if this attempt still owns it; its
    checkpoint goes (a finished job is never resumed)."""
    with session_scope(settings.database_url) as session:
        result = session.execute(
            update(Job).where(_fence(job_id, attempt)).values(status=status, finished_at=utcnow(), **values)
        )
        if result.rowcount == 1:
            session.execute(delete(Checkpoint).where(Checkpoint.job_id == job_id))
        return result.rowcount == 1


def finish_with_model(settings: Settings, job: JobSnapshot, model_values: dict[str, Any],
                      job_values: dict[str, Any], status: str = "succeeded") -> str | None:
    """Insert the Model and end the job with `status` (succeeded; cancelled or failed for a
    partial model) in one transaction; the model id, or None when this attempt no longer owns
    the job (then nothing is written)."""
    model = Model(id=new_id(), tenant_id=job.tenant_id, job_id=job.id, **model_values)
    with session_scope(settings.database_url) as session:
        owned = session.execute(
            update(Job).where(_fence(job.id, job.attempt)).values(
                status=status, finished_at=utcnow(), model_id=model.id, **job_values)
        ).rowcount == 1
        if not owned:
            session.rollback()
            return None
        session.add(model)
        session.execute(delete(Checkpoint).where(Checkpoint.job_id == job.id))
        return model.id


def requeue_job(settings: Settings, job_id: str, attempt: int, table: Any = Job) -> bool:
    """Put a running job (or asynchronous prediction) back to queued (its worker is stopping);
    unpublished until republished. Its epochs and checkpoint (result chunks) stay: the next run
    resumes after them."""
    with session_scope(settings.database_url) as session:
        result = session.execute(
            update(table).where(fence(table, job_id, attempt)).values(
                status="queued", worker_id=None, heartbeat_at=None, published_at=None)
        )
        return result.rowcount == 1
