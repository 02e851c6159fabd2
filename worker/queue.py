"""Publishing a job or an asynchronous prediction to the broker (used by the API after the row is committed)."""
from __future__ import annotations

import logging
import os
import threading
from typing import Any

from celery import Celery
from sqlalchemy import update

from bps.config import Settings
from bps.db import session_scope
from bps.models import Job, Prediction, utcnow

log = logging.getLogger(__name__)
_lock = threading.Lock()
_apps: dict[tuple[str, int], Celery] = {}


def celery_for(settings: Settings) -> Celery:
    """One Celery app (and producer pool) per broker URL and process."""
    from worker.celery_app import create_celery  # noqa: PLC0415

    key = (settings.broker_url, os.getpid())
    with _lock:
        app = _apps.get(key)
        if app is None:
            app = create_celery(settings)
            _apps[key] = app
        return app


def warm_publisher(settings: Settings) -> None:
    """Builds the process's Celery app and connects its producer, declaring the queues, as the
    first publish would (through maybe_declare: its cache of declared queues is the one the
    sends check, so the first publish does not declare them again); a broker that cannot be
    reached now is logged, not raised (the first publish then tries again)."""
    try:
        app = celery_for(settings)
        with app.producer_or_acquire() as producer:
            for queue in app.amqp.queues.values():
                producer.maybe_declare(queue)
    except Exception:  # noqa: BLE001
        log.warning("the broker publisher could not connect yet; the first publish will retry", exc_info=True)


def publish_job(settings: Settings, job_id: str, queue: str) -> None:
    """Send `bps.train_job(job_id)` to `queue`, then record `Job.published_at`.

    The job row must already be committed (a worker may pick the message up at once) and the
    caller must hold no open write transaction on it. Raises the broker's error when the
    message cannot be sent; `published_at` then stays NULL, so the job can be republished.
    """
    from worker.celery_app import TRAIN_TASK  # noqa: PLC0415

    _publish(settings, TRAIN_TASK, Job, job_id, queue)


def publish_prediction(settings: Settings, prediction_id: str, queue: str) -> None:
    """Send `bps.run_prediction(prediction_id)`, as `publish_job` sends a job."""
    from worker.celery_app import PREDICT_TASK  # noqa: PLC0415

    _publish(settings, PREDICT_TASK, Prediction, prediction_id, queue)


def _publish(settings: Settings, task: str, table: Any, row_id: str, queue: str) -> None:
    from worker.celery_app import QUEUES  # noqa: PLC0415

    if queue not in QUEUES:
        raise ValueError(f"queue must be one of {QUEUES}, got {queue!r}")
    celery_for(settings).send_task(task, args=[row_id], queue=queue, routing_key=queue)
    with session_scope(settings.database_url) as session:
        session.execute(update(table).where(table.id == row_id).values(published_at=utcnow()))
