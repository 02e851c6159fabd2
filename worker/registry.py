"""What a worker process does besides running tasks: it registers itself (WorkerRecord, so the
API knows whether a GPU worker is alive), republishes jobs that were lost on the way (a queued
job never published, a running job whose worker went silent), and, when it shuts down, stops
its running job at the next batch and requeues it."""
from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timedelta
from typing import Any

from celery import signals
from sqlalchemy import and_, delete, or_, select, update

from bps.config import Settings
from bps.db import session_scope
from bps.models import Checkpoint, Job, Prediction, WorkerRecord, utcnow

log = logging.getLogger(__name__)
UNPUBLISHED_GRACE_S = 30.0


def worker_device(queues: list[str]) -> tuple[str, str | None, int | None]:
    """(device, gpu name, gpu memory). Probes CUDA only for a GPU worker, which never forks."""
    if "gpu" not in queues:
        return "cpu", None, None
    try:
        from worker.engine.backend import get_array_module  # noqa: PLC0415

        cupy = get_array_module("gpu")
        props = cupy.cuda.runtime.getDeviceProperties(0)
        name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
        return "gpu", name, int(props["totalGlobalMem"])
    except Exception:  # noqa: BLE001
        log.warning("worker on queue gpu has no usable GPU", exc_info=True)
        return "cpu", None, None


def beat_worker(settings: Settings, worker_id: str, queues: list[str], device: tuple) -> None:
    kind, gpu_name, gpu_memory = device
    with session_scope(settings.database_url) as session:
        record = session.get(WorkerRecord, worker_id)
        if record is None:
            session.add(WorkerRecord(id=worker_id, device=kind, queues=queues, gpu_name=gpu_name,
                                     gpu_memory_bytes=gpu_memory))
        else:
            record.heartbeat_at = utcnow()


def exhausted_error(settings: Settings) -> str:
    return (f"the job's worker stopped responding {settings.job_max_attempts} times; "
            "the job may need more memory or time than a worker has: submit it with fewer epochs or a smaller model")


def fail_exhausted(settings: Settings, stale_before: datetime, table: Any = Job) -> int:
    """Silent running jobs (or asynchronous predictions) that have used every attempt end
    `failed`, saying why."""
    with session_scope(settings.database_url) as session:
        ids = list(session.scalars(select(table.id).where(
            table.status == "running", table.heartbeat_at < stale_before, table.attempt >= settings.job_max_attempts)))
        values = {"status": "failed", "error": exhausted_error(settings)}
        if table is Job:
            values.update(stop_reason="error", stop_detail=values["error"], eta_s=None)
        for job_id in ids:  # one conditional UPDATE each: a heartbeat that came back wins
            failed = session.execute(
                update(table).where(table.id == job_id, table.status == "running", table.heartbeat_at < stale_before)
                .values(finished_at=utcnow(), **values)
            ).rowcount
            if failed and table is Job:
                session.execute(delete(Checkpoint).where(Checkpoint.job_id == job_id))
        return len(ids)


def broker_queue_sizes(settings: Settings) -> dict[str, int] | None:
    """Messages waiting in each queue, or None when the broker cannot be asked. The connection
    is the publishing app's (its transport and options): kombu caches one engine per database
    URL in a class-level dict, made by the first connection to open it, and the publishes reuse it."""
    from worker.celery_app import QUEUES  # noqa: PLC0415
    from worker.queue import celery_for  # noqa: PLC0415

    try:  # a fresh connection each time: a pooled one may point at a broker that restarted
        with celery_for(settings).connection_for_read(connect_timeout=5) as connection:
            connection.ensure_connection(max_retries=1)
            return {name: waiting_messages(connection.default_channel, name) for name in QUEUES}
    except Exception:  # noqa: BLE001
        log.warning("reaper: the broker cannot be reached", exc_info=True)
        return None


def waiting_messages(channel: Any, queue: str) -> int:
    """Messages waiting in `queue`, by a passive declare (0 for a queue never declared)."""
    from amqp.exceptions import ChannelError  # noqa: PLC0415

    try:
        return int(channel.queue_declare(queue=queue, passive=True).message_count)
    except ChannelError:  # never declared: nothing was ever sent to it
        return 0


def lost_job_conditions(settings: Settings, now: datetime, empty_queues: list[str], table: Any = Job) -> list[Any]:
    """Jobs (or asynchronous predictions) no worker will run unless they are published again:
    running with a silent worker; queued and never published; queued, published long ago, and
    its queue now empty (the broker lost the message, e.g. Redis restarted without persistence)."""
    stale = now - timedelta(seconds=settings.job_heartbeat_timeout_s)
    unpublished = now - timedelta(seconds=min(UNPUBLISHED_GRACE_S, settings.job_heartbeat_timeout_s))
    return [
        and_(table.status == "running", table.heartbeat_at < stale, table.attempt < settings.job_max_attempts,
             or_(table.published_at.is_(None), table.published_at < stale)),
        and_(table.status == "queued", table.published_at.is_(None), table.created_at < unpublished),
        and_(table.status == "queued", table.published_at < stale, table.queue.in_(empty_queues)),
    ]


def reap(settings: Settings) -> int:
    """Republish jobs and asynchronous predictions that no worker will otherwise run; fail those
    out of attempts. Returns how many were republished. Safe with many workers reaping at once:
    each row is leased by a conditional UPDATE of `published_at` before it is published, so
    only one reaper sends it (and claims are fenced, so even a duplicate message is harmless)."""
    from worker.queue import publish_job, publish_prediction  # noqa: PLC0415

    now = utcnow()
    for table in (Job, Prediction):
        fail_exhausted(settings, now - timedelta(seconds=settings.job_heartbeat_timeout_s), table)
    sizes = broker_queue_sizes(settings)
    if sizes is None:
        return 0
    empty = [name for name, size in sizes.items() if size == 0]
    published = 0
    for table, publish in ((Job, publish_job), (Prediction, publish_prediction)):
        for condition in lost_job_conditions(settings, now, empty, table):
            sent, failed = _republish(settings, table, condition, publish)
            published += sent
            if failed:
                return published
    return published


def _republish(settings: Settings, table: Any, condition: Any, publish: Any) -> tuple[int, bool]:
    """(rows published, whether the broker refused one)."""
    with session_scope(settings.database_url) as session:
        rows = session.execute(select(table.id, table.queue).where(condition)).all()
    published = 0
    for row_id, queue in rows:
        if not _lease(settings, table, row_id, condition):
            continue
        try:
            publish(settings, row_id, queue)
            published += 1
        except Exception:  # noqa: BLE001
            log.warning("reaper: could not republish %s %s", table.__tablename__, row_id, exc_info=True)
            _release(settings, table, row_id)
            return published, True
    return published, False


def _lease(settings: Settings, table: Any, row_id: str, condition: Any) -> bool:
    with session_scope(settings.database_url) as session:
        return session.execute(
            update(table).where(table.id == row_id, condition).values(published_at=utcnow())
            .execution_options(synchronize_session=False)
        ).rowcount == 1


def _release(settings: Settings, table: Any, row_id: str) -> None:
    with session_scope(settings.database_url) as session:
        session.execute(update(table).where(table.id == row_id, table.status == "queued").values(published_at=None))


class Supervisor(threading.Thread):
    """Beats the worker record every worker_heartbeat_timeout_s / 3 and reaps every
    reaper_interval_s (REAPER_INTERVAL_S), in this worker process, whatever the topology."""

    def __init__(self, settings: Settings, worker_id: str, queues: list[str]) -> None:
        super().__init__(name="bps-supervisor", daemon=True)
        self.settings, self.worker_id, self.queues = settings, worker_id, queues
        self.done = threading.Event()

    def run(self) -> None:
        device = worker_device(self.queues)
        beat_every = max(1.0, self.settings.worker_heartbeat_timeout_s / 3)
        reap_every = max(0.2, self.settings.reaper_interval_s)
        next_beat = next_reap = time.monotonic()
        while not self.done.is_set():
            now = time.monotonic()
            if now >= next_beat:
                next_beat = now + beat_every
                self._guarded(beat_worker, self.settings, self.worker_id, self.queues, device)
            if now >= next_reap:
                next_reap = now + reap_every
                self._guarded(reap, self.settings)
            self.done.wait(max(0.05, min(next_beat, next_reap) - time.monotonic()))

    def _guarded(self, action: Any, *args: Any) -> None:
        try:
            action(*args)
        except Exception:  # noqa: BLE001  (the database may be down: try again next time)
            log.warning("worker supervisor: %s failed", getattr(action, "__name__", action), exc_info=True)


def install_worker_signals(settings: Settings, queues: list[str]) -> None:
    """Connect the supervisor and the shutdown hook to this process's Celery worker."""
    state: dict[str, Supervisor] = {}

    @signals.worker_ready.connect(weak=False)
    def _start(sender, **_kwargs) -> None:  # noqa: ANN001
        supervisor = Supervisor(settings, str(sender.hostname), queues)
        state["supervisor"] = supervisor
        supervisor.start()

    @signals.worker_shutting_down.connect(weak=False)
    def _stopping(**_kwargs) -> None:
        from worker.runner import SHUTDOWN  # noqa: PLC0415

        SHUTDOWN.set()
        if "supervisor" in state:
            state["supervisor"].done.set()
