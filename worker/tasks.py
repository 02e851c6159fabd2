"""The Celery task: a thin shell around the runner, which owns every state change."""
from __future__ import annotations

import logging

from celery import Celery
from celery.exceptions import Reject
from sqlalchemy.exc import OperationalError

from bps.config import Settings

log = logging.getLogger(__name__)
DB_RETRY_S = 10


def register_tasks(app: Celery, settings: Settings) -> None:
    """Register `bps.train_job(job_id)` on `app`; it runs with `settings` of the worker."""
    from worker.celery_app import TRAIN_TASK  # noqa: PLC0415

    @app.task(name=TRAIN_TASK, bind=True, acks_late=True, ignore_result=True, shared=False)
    def train_job(task, job_id: str) -> None:  # noqa: ANN001
        # Imported here so that the engine (and CuPy, for GPU jobs) loads in the process
        # that trains, never in the parent of a forking pool.
        from worker.runner import SHUTDOWN, run_job  # noqa: PLC0415

        if SHUTDOWN.is_set():  # received while stopping: leave it to the next worker
            raise Reject("worker shutting down", requeue=True)
        worker_id = task.request.hostname or "worker"
        log.info("job %s: received by %s", job_id, worker_id)
        try:
            run_job(str(job_id), settings=settings, worker_id=worker_id)
        except OperationalError as exc:  # the database is unreachable before the claim: try later
            log.warning("job %s: database unavailable (%s); retrying in %d s", job_id, exc, DB_RETRY_S)
            raise task.retry(countdown=DB_RETRY_S, max_retries=None) from exc
