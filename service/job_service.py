"""Jobs: validate against the dataset and the spec (every problem at once), commit, publish;
list, get, epochs, cancel. Every query is scoped to the tenant."""
from __future__ import annotations

import logging
import math
import threading
from dataclasses import replace
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from bps.config import Settings
from bps.listing import Page, fetch_page
from bps.models import TERMINAL_STATUSES, Checkpoint, Dataset, Epoch, Job, utcnow
from bps.tenants import get_owned
from bps.problems import Conflict, TooManyRequests, Unprocessable
from service.job_checks import InputPlan, plan_inputs, split_errors
from service.schemas import JobCreate

log = logging.getLogger(__name__)
# A submission waits at most this long for the broker; a job not published by then stays
# queued with published_at NULL and the worker's reaper publishes it (the job table is the outbox).
PUBLISH_TIMEOUT_S = 2.0
QUOTA_RETRY_AFTER_S = 30
ALL_ROWS = 2**62


def _spec_limits(settings: Settings) -> Any:
    from worker.engine.spec import SpecLimits  # noqa: PLC0415

    return SpecLimits(max_params=settings.max_params, max_epochs=settings.max_epochs,
                      max_batch_size=settings.max_batch_size)


def _validate_spec(raw: dict[str, Any], plan: InputPlan | None, settings: Settings) -> tuple[dict | None, list]:
    from worker.engine.spec import SpecError, validate_spec  # noqa: PLC0415

    try:
        spec = validate_spec(raw, input_shape=plan.input_shape if plan else None,
                             n_outputs=plan.n_outputs if plan else None, limits=_spec_limits(settings))
        return spec, []
    except SpecError as exc:
        return None, list(exc.errors)


def _limit_errors(dataset: Dataset, spec: dict | None, settings: Settings) -> list[dict[str, Any]]:
    if spec is not None and spec["epochs"] * dataset.n_rows > settings.max_work_rows:
        return [{"loc": ["spec", "epochs"], "msg": (
            f"epochs x rows = {spec['epochs']} x {dataset.n_rows} exceeds the work limit MAX_WORK_ROWS="
            f"{settings.max_work_rows}: use fewer epochs or a smaller dataset")}]
    return []


def check_tenant_quota(session: Session, tenant_id: str, settings: Settings, table: Any = Job,
                       noun: str = "jobs") -> None:
    """429 when the tenant already has MAX_QUEUED_JOBS_PER_TENANT queued jobs, or
    MAX_RUNNING_JOBS_PER_TENANT + MAX_QUEUED_JOBS_PER_TENANT queued and running jobs together
    (a quota: the same request succeeds later, so 429 with Retry-After rather than 422).
    Asynchronous predictions (table=Prediction) have the same quotas, counted apart."""
    counts = dict(session.execute(select(table.status, func.count()).where(
        table.tenant_id == tenant_id, table.status.in_(("queued", "running"))).group_by(table.status)).all())
    queued, running = counts.get("queued", 0), counts.get("running", 0)
    if queued >= settings.max_queued_jobs_per_tenant:
        raise TooManyRequests(
            f"you have {queued} queued {noun}; the limit MAX_QUEUED_JOBS_PER_TENANT is "
            f"{settings.max_queued_jobs_per_tenant}: wait for some to start or cancel them",
            retry_after_s=QUOTA_RETRY_AFTER_S, loc=["body"])
    active_limit = settings.max_queued_jobs_per_tenant + settings.max_running_jobs_per_tenant
    if queued + running >= active_limit:
        raise TooManyRequests(
            f"you have {queued} queued and {running} running {noun}; the limit is "
            f"MAX_QUEUED_JOBS_PER_TENANT + MAX_RUNNING_JOBS_PER_TENANT = {active_limit}: wait or cancel some",
            retry_after_s=QUOTA_RETRY_AFTER_S, loc=["body"])


def _route(session: Session, spec: dict[str, Any] | None, settings: Settings) -> tuple[str, list]:
    """The queue for the spec's device, or the error saying no GPU worker is alive."""
    from bps.workers import queue_for_device  # noqa: PLC0415

    if spec is None:
        return "cpu", []
    try:
        return queue_for_device(session=session, device=spec["device"],
                                max_age_s=settings.worker_heartbeat_timeout_s), []
    except Unprocessable as exc:
        return "cpu", exc.errors


def create_job(*, session: Session, tenant_id: str, request: JobCreate, settings: Settings) -> Job:
    """Validate everything, then add the queued Job (flushed; the caller commits, then publishes)."""
    dataset = session.scalar(select(Dataset).where(Dataset.id == request.dataset_id, Dataset.tenant_id == tenant_id))
    # First pass without the data's shapes: the normalised spec names the loss (it may be derived).
    first_spec, first_errors = _validate_spec(request.spec, None, settings)
    if dataset is None:
        missing = {"loc": ["body", "dataset_id"], "msg": f"dataset {request.dataset_id} not found"}
        raise Unprocessable(f"dataset {request.dataset_id} not found", errors=[missing, *first_errors])
    loss = (first_spec or {}).get("loss", request.spec.get("loss"))
    plan = plan_inputs(dataset, loss=loss, dtype=(first_spec or {}).get("dtype"), target=request.target,
                       features=request.features, input_shape=request.input_shape, impute=request.impute)
    spec, spec_errors = _validate_spec(request.spec, plan, settings)
    queue, route_errors = _route(session, spec, settings)
    errors = [*plan.errors, *spec_errors, *split_errors(dataset, spec), *_limit_errors(dataset, spec, settings),
              *route_errors]
    if errors:
        raise Unprocessable(f"the job cannot run: {len(errors)} problem(s), see errors", errors=errors)
    check_tenant_quota(session, tenant_id, settings)
    from worker.engine.spec import task_for_loss  # noqa: PLC0415

    time_limit_s = min(spec["time_limit_s"] or settings.job_time_limit_s, settings.job_time_limit_s)
    job = Job(
        tenant_id=tenant_id, dataset_id=dataset.id, status="queued", target=request.target,
        features=plan.features, input_shape=request.input_shape, impute=request.impute, spec=spec,
        task=task_for_loss(spec["loss"]), queue=queue, epochs=int(spec["epochs"]), time_limit_s=time_limit_s,
    )
    session.add(job)
    session.flush()
    return job


def _publish_or_log(settings: Settings, job_id: str, queue: str, publisher: str) -> None:
    from worker import queue as worker_queue  # noqa: PLC0415

    try:
        getattr(worker_queue, publisher)(settings, job_id, queue)
    except Exception:  # noqa: BLE001
        log.exception("%s: publishing %s to queue %s failed; it stays queued for republishing",
                      publisher, job_id, queue)


def publish(settings: Settings, job: Any, publisher: str = "publish_job") -> None:
    """After the commit. A broker that refuses or does not answer within PUBLISH_TIMEOUT_S leaves the
    job queued for the reaper to republish; the submission is answered 202 either way. The
    publish runs in a daemon thread so a hanging broker connection cannot hold the request.
    An asynchronous prediction is published the same way (publisher="publish_prediction")."""
    sender = threading.Thread(target=_publish_or_log, args=(settings, job.id, job.queue, publisher), daemon=True,
                              name=f"publish-{job.id}")
    sender.start()
    sender.join(PUBLISH_TIMEOUT_S)
    if sender.is_alive():
        log.warning("job %s: the broker did not answer within %.1f s; it stays queued for republishing",
                    job.id, PUBLISH_TIMEOUT_S)


def get_job(*, session: Session, tenant_id: str, job_id: str) -> Job:
    return get_owned(session, Job, tenant_id, job_id, "job")


def list_jobs(*, session: Session, tenant_id: str, status: str | None, limit: int, offset: int) -> Page:
    query = select(Job).where(Job.tenant_id == tenant_id)
    if status is not None:
        query = query.where(Job.status == status)
    return fetch_page(session, query.order_by(Job.created_at.desc(), Job.id.desc()), limit=limit, offset=offset)


def _finite(value: Any) -> Any:
    return value if not isinstance(value, float) or math.isfinite(value) else None


EPOCH_FIELDS = ("epoch", "loss", "val_loss", "accuracy", "val_accuracy", "duration_s", "learning_rate")


def epoch_resource(row: Epoch) -> dict[str, Any]:
    """An Epoch row as the API shows it (non-finite numbers as null)."""
    return {**{f: _finite(getattr(row, f)) for f in EPOCH_FIELDS},
            "grad_norms": {k: _finite(v) for k, v in (row.grad_norms or {}).items()}}


def list_epochs(*, session: Session, tenant_id: str, job_id: str, since: int = 0, limit: int | None = None,
                offset: int = 0) -> Page:
    """The job's epochs after epoch `since`, in order (all of them without `limit`)."""
    job = get_job(session=session, tenant_id=tenant_id, job_id=job_id)
    query = select(Epoch).where(Epoch.job_id == job.id, Epoch.epoch > since).order_by(Epoch.epoch)
    page = fetch_page(session, query, limit=limit or ALL_ROWS, offset=offset)
    return replace(page, items=[epoch_resource(row) for row in page.items],
                   limit=limit or max(1, page.total))  # without a limit, one page holds them all


def delete_job(*, session: Session, tenant_id: str, job_id: str) -> None:
    """Delete a finished job with its epochs and checkpoint; 409 while it is queued or running.
    Its model, if any, stays (models outlive their jobs, as jobs outlive their datasets)."""
    job = get_job(session=session, tenant_id=tenant_id, job_id=job_id)
    deleted = session.execute(
        delete(Job).where(Job.id == job.id, Job.status.in_(TERMINAL_STATUSES)).execution_options(
            synchronize_session=False)
    ).rowcount
    if not deleted:
        raise Conflict(f"job {job_id} is {job.status}: cancel it first (POST /v1/jobs/{job_id}/cancel), "
                       "then delete it once it has stopped", loc=["path", "job_id"])
    session.execute(delete(Epoch).where(Epoch.job_id == job.id))
    session.execute(delete(Checkpoint).where(Checkpoint.job_id == job.id))
    session.expunge(job)


def cancel_job(*, session: Session, tenant_id: str, job_id: str) -> Job:
    """queued -> cancelled now; running -> cancel_requested (the worker stops at the next batch);
    finished -> 409. Conditional updates, so a worker claiming the job at the same time is safe."""
    job = get_job(session=session, tenant_id=tenant_id, job_id=job_id)
    now = utcnow()
    cancelled = session.execute(
        update(Job).where(Job.id == job.id, Job.status == "queued")
        .values(status="cancelled", cancel_requested=True, finished_at=now, stop_reason="cancelled",
                stop_detail="cancelled before it started")
    ).rowcount
    if not cancelled:
        requested = session.execute(
            update(Job).where(Job.id == job.id, Job.status == "running").values(cancel_requested=True)
        ).rowcount
        if not requested:
            session.refresh(job)
            raise Conflict(f"job {job_id} has already finished ({job.status}); it cannot be cancelled",
                           loc=["path", "job_id"])
    session.flush()
    session.refresh(job)
    return job


