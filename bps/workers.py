"""Which workers are alive and what they can run: the routing of `device` to a queue."""
from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from bps.models import WorkerRecord, utcnow
from bps.problems import Unprocessable


def live_workers(*, session: Session, max_age_s: float) -> list[WorkerRecord]:
    """Workers whose heartbeat is younger than `max_age_s`, GPU workers first."""
    cutoff = utcnow() - timedelta(seconds=max_age_s)
    rows = session.scalars(select(WorkerRecord).where(WorkerRecord.heartbeat_at >= cutoff)).all()
    return sorted(rows, key=lambda w: (w.device != "gpu", w.id))


def describe(worker: WorkerRecord) -> dict[str, Any]:
    return {"id": worker.id, "device": worker.device, "queues": list(worker.queues or []),
            "gpu_name": worker.gpu_name, "gpu_memory_bytes": worker.gpu_memory_bytes,
            "heartbeat_at": worker.heartbeat_at.isoformat().replace("+00:00", "Z")}


def queue_for_device(*, session: Session, device: str, max_age_s: float) -> str:
    """"gpu" for device gpu (422 when no GPU worker is alive: it would wait forever) and for
    auto when a GPU worker is alive; "cpu" otherwise."""
    if device == "cpu":
        return "cpu"
    gpu_alive = any(w.device == "gpu" for w in live_workers(session=session, max_age_s=max_age_s))
    if gpu_alive:
        return "gpu"
    if device == "gpu":
        raise Unprocessable(
            'no GPU worker is alive to run a job with "device": "gpu"; use "auto" or "cpu", '
            "or start a worker with `bps worker --queues gpu` on a GPU node",
            loc=["spec", "device"])
    return "cpu"
