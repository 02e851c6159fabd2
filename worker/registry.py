"""What a worker process does besides running tasks: it registers itself (WorkerRecord, so the
API knows whether a GPU worker is alive), republishes jobs that were lost on the way (a queued
job never published, a running job whose worker went silent), and, when it shuts down, stops
its running job at the next batch and requeues it."""
from __future__ import annotations

import logging
import threading
from datetime import timedelta

from celery import signals
from sqlalchemy import and_, or_, select, update

from bps.config import Settings
from bps.db import session_scope
from bps.models import Job, WorkerRecord, utcnow

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


def reap(settings: Settings) -> int:
    """Republish jobs that no worker will otherwise run; fail those out of attempts.
    Returns how many were republished. Claims are fenced, so a duplicate message is harmless."""
    from worker.queue import publish_job  # noqa: PLC0415

    now = utcnow()
    stale = now - timedelta(seconds=settings.job_heartbeat_timeout_s)
    unpublished = now - timedelta(seconds=UNPUBLISHED_GRACE_S)
    with session_scope(settings.database_url) as session:
        session.execute(
            update(Job).where(Job.status == "running", Job.heartbeat_at < stale,
                              Job.attempt >= settings.job_max_attempts)
            .values(status="failed", finished_at=now, error=(
                f"the worker running this job stopped responding {settings.job_max_attempts} times; "
                "the job may need more memory or time than a worker has: submit it with fewer epochs or a smaller model"))
        )
        rows = session.execute(select(Job.id, Job.queue).where(or_(
            and_(Job.status == "queued", Job.published_at.is_(None), Job.created_at < unpublished),
            and_(Job.status == "running", Job.heartbeat_at < stale,
                 or_(Job.published_at.is_(None), Job.published_at < stale)),
        ))).all()
    for job_id, queue in rows:
        try:
            publish_job(settings, job_id, queue)
        except Exception:  # noqa: BLE001
            log.warning("reaper: could not republish job %s", job_id, exc_info=True)
            return 0
    return len(rows)


class Supervisor(threading.Thread):
    def __init__(self, settings: Settings, worker_id: str, queues: list[str]) -> None:
        super().__init__(name="bps-supervisor", daemon=True)
        self.settings, self.worker_id, self.queues = settings, worker_id, queues
        self.done = threading.Event()

    def run(self) -> None:
        device = worker_device(self.queues)
        interval = max(1.0, self.settings.worker_heartbeat_timeout_s / 3)
        while True:
            try:
                beat_worker(self.settings, self.worker_id, self.queues, device)
                reap(self.settings)
            except Exception:  # noqa: BLE001
                log.warning("worker heartbeat failed", exc_info=True)
            if self.done.wait(interval):
                return


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
