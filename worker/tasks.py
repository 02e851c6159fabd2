"""The Celery task: a thin shell around the runner, which owns every state change."""
from __future__ import annotations

import logging
from typing import Any

from celery import Celery
from celery.exceptions import Reject
from sqlalchemy.exc import OperationalError

from bps.config import Settings
from bps.logs import log_context

log = logging.getLogger(__name__)


def register_tasks(app: Celery, settings: Settings) -> None:
    """Register `bps.train_job(job_id)` and `bps.run_prediction(prediction_id)` on `app`; they
    run with `settings` of the worker."""
    from worker.celery_app import PREDICT_TASK, TRAIN_TASK  # noqa: PLC0415

    @app.task(name=TRAIN_TASK, bind=True, acks_late=True, ignore_result=True, shared=False)
    def train_job(task, job_id: str) -> None:  # noqa: ANN001
        # Imported here so that the engine (and CuPy, for GPU jobs) loads in the process
        # that trains, never in the parent of a forking pool.
        from worker.runner import run_job  # noqa: PLC0415

        _run_claimable(task, run_job, "job", job_id, settings)

    @app.task(name=PREDICT_TASK, bind=True, acks_late=True, ignore_result=True, shared=False)
    def run_prediction(task, prediction_id: str) -> None:  # noqa: ANN001
        from worker.prediction_runner import run_prediction  # noqa: PLC0415

        _run_claimable(task, run_prediction, "prediction", prediction_id, settings)


def _run_claimable(task: Any, run: Any, kind: str, row_id: str, settings: Settings) -> None:
    from worker.runner import SHUTDOWN  # noqa: PLC0415

    if SHUTDOWN.is_set():  # received while stopping: leave it to the next worker
        raise Reject("worker shutting down", requeue=True)
    worker_id = task.request.hostname or "worker"
    with log_context(**{f"{kind}_id": str(row_id)}, worker=worker_id):
        log.info("%s %s: received by %s", kind, row_id, worker_id)
        try:
            run(str(row_id), settings=settings, worker_id=worker_id)
        except OperationalError as exc:  # the database is unreachable before the claim: try later
            _retry_or_give_up(task, settings, f"{kind} {row_id}", exc)


def _retry_or_give_up(task: Any, settings: Settings, what: str, exc: OperationalError) -> None:
    """CLAIM_DB_RETRIES more tries CLAIM_DB_RETRY_S apart, then the message is given up with an
    error: the row stays queued in the database, and once the database answers again a worker's
    reaper republishes it (queued, and its queue empty)."""
    tries, delay = task.request.retries, settings.claim_db_retry_s
    if tries >= settings.claim_db_retries:
        log.error("%s: the database was unreachable at %d tries over about %g s (%s); this message is "
                  "given up: it stays queued and is republished once the database is back",
                  what, tries + 1, tries * delay, exc.__class__.__name__)
        raise Reject(f"database unreachable at {tries + 1} tries", requeue=False) from exc
    log.warning("%s: database unavailable (%s); try %d of %d again in %g s",
                what, exc.__class__.__name__, tries + 1, settings.claim_db_retries + 1, delay)
    raise task.retry(countdown=delay, max_retries=settings.claim_db_retries) from exc
