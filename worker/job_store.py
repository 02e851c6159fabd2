"""The runner's database writes: short transactions, ids not objects, every write to a running
job fenced by `WHERE id = :job AND attempt = :attempt AND status = 'running'`, so a run that
lost its job (cancelled, taken over by another worker) can change nothing."""
from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import and_, delete, or_, select, update

from bps.config import Settings
from bps.db import session_scope
from bps.models import Epoch, Job, Model, new_id, utcnow


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


def finite_or_none(value: Any) -> float | None:
    """A JSON-safe float: NaN and infinities become None (the API answers null)."""
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _fence(job_id: str, attempt: int):  # noqa: ANN202
    return and_(Job.id == job_id, Job.attempt == attempt, Job.status == "running")


def claim_job(settings: Settings, job_id: str, worker_id: str) -> JobSnapshot | None:
    """Take the job with ONE conditional UPDATE: a queued job that is not being cancelled, or a
    running one whose worker has been silent for `job_heartbeat_timeout_s` (takeover). None
    when another run owns it, it was cancelled or finished, or it does not exist."""
    now = utcnow()
    stale_before = now - timedelta(seconds=settings.job_heartbeat_timeout_s)
    claimable = or_(
        and_(Job.status == "queued", Job.cancel_requested.is_(False)),
        and_(Job.status == "running", Job.heartbeat_at < stale_before, Job.attempt < settings.job_max_attempts),
    )
    with session_scope(settings.database_url) as session:
        claimed = session.execute(
            update(Job)
            .where(Job.id == job_id, claimable)
            .values(status="running", attempt=Job.attempt + 1, worker_id=worker_id,
                    started_at=now, heartbeat_at=now, progress=0.0, epoch=0, error=None)
            .execution_options(synchronize_session=False)
        ).rowcount
        if claimed != 1:
            return None
        job = session.get(Job, job_id)
        # A takeover restarts from epoch 1: the previous attempt's epochs go.
        session.execute(delete(Epoch).where(Epoch.job_id == job_id, Epoch.attempt < job.attempt))
        session.execute(
            update(Job).where(Job.id == job_id).values(epochs=int(job.spec.get("epochs", 0) or 0))
        )
        return JobSnapshot(
            id=job.id, tenant_id=job.tenant_id, attempt=job.attempt, dataset_id=job.dataset_id,
            target=job.target, features=job.features, input_shape=job.input_shape, impute=job.impute,
            spec=dict(job.spec), task=job.task, queue=job.queue, time_limit_s=job.time_limit_s,
        )


def cancel_if_queued_and_requested(settings: Settings, job_id: str) -> None:
    """A queued job whose cancel was requested never starts: it ends cancelled here."""
    with session_scope(settings.database_url) as session:
        session.execute(
            update(Job)
            .where(Job.id == job_id, Job.status == "queued", Job.cancel_requested.is_(True))
            .values(status="cancelled", finished_at=utcnow())
            .execution_options(synchronize_session=False)
        )


def set_device(settings: Settings, job_id: str, attempt: int, device: str) -> bool:
    with session_scope(settings.database_url) as session:
        result = session.execute(update(Job).where(_fence(job_id, attempt)).values(device=device))
        return result.rowcount == 1


def epoch_metrics(record: dict[str, Any]) -> dict[str, float | None]:
    keys = ("loss", "val_loss", "accuracy", "val_accuracy", "learning_rate")
    return {key: finite_or_none(record.get(key)) for key in keys}


def record_epoch(settings: Settings, job: JobSnapshot, record: dict[str, Any]) -> tuple[bool, bool]:
    """Insert one Epoch row and move the job's progress, in one transaction.
    Returns (still_owned, cancel_requested)."""
    epoch = int(record["epoch"])
    total = max(int(job.spec.get("epochs", epoch) or epoch), 1)
    metrics = epoch_metrics(record)
    with session_scope(settings.database_url) as session:
        owned = session.execute(
            update(Job).where(_fence(job.id, job.attempt)).values(
                epoch=epoch, progress=min(epoch / total, 1.0), metrics=metrics, heartbeat_at=utcnow())
        ).rowcount == 1
        if not owned:
            session.rollback()
            return False, False
        grad_norms = {str(k): finite_or_none(v) for k, v in (record.get("grad_norms") or {}).items()}
        session.add(Epoch(
            job_id=job.id, epoch=epoch, attempt=job.attempt, grad_norms=grad_norms,
            duration_s=finite_or_none(record.get("duration_s")),
            **{k: v for k, v in metrics.items()},
        ))
        cancel = session.scalar(select(Job.cancel_requested).where(Job.id == job.id))
        return True, bool(cancel)


def heartbeat(settings: Settings, job_id: str, attempt: int) -> tuple[bool, bool]:
    """Refresh heartbeat_at. Returns (still_owned, cancel_requested)."""
    with session_scope(settings.database_url) as session:
        owned = session.execute(
            update(Job).where(_fence(job_id, attempt)).values(heartbeat_at=utcnow())
        ).rowcount == 1
        cancel = session.scalar(select(Job.cancel_requested).where(Job.id == job_id))
        return owned, bool(cancel)


def finish_job(settings: Settings, job_id: str, attempt: int, status: str, **values: Any) -> bool:
    """End a running job (failed/cancelled/succeeded) if this attempt still owns it."""
    with session_scope(settings.database_url) as session:
        result = session.execute(
            update(Job).where(_fence(job_id, attempt)).values(status=status, finished_at=utcnow(), **values)
        )
        return result.rowcount == 1


def finish_with_model(settings: Settings, job: JobSnapshot, model_values: dict[str, Any],
                      job_values: dict[str, Any]) -> str | None:
    """Insert the Model and mark the job succeeded in one transaction; the model id, or None
    when this attempt no longer owns the job (then nothing is written)."""
    model = Model(id=new_id(), tenant_id=job.tenant_id, job_id=job.id, **model_values)
    with session_scope(settings.database_url) as session:
        owned = session.execute(
            update(Job).where(_fence(job.id, job.attempt)).values(
                status="succeeded", finished_at=utcnow(), progress=1.0, model_id=model.id, **job_values)
        ).rowcount == 1
        if not owned:
            session.rollback()
            return None
        session.add(model)
        return model.id


def requeue_job(settings: Settings, job_id: str, attempt: int) -> bool:
    """Put a running job back to queued (its worker is stopping); unpublished until republished."""
    with session_scope(settings.database_url) as session:
        result = session.execute(
            update(Job).where(_fence(job_id, attempt)).values(
                status="queued", worker_id=None, heartbeat_at=None, published_at=None, progress=0.0, epoch=0)
        )
        return result.rowcount == 1
