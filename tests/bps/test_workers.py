"""Routing of `device` to a queue from the registered, live workers (fake workers, no GPU)."""
from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from bps.models import Base, WorkerRecord, utcnow
from bps.problems import Unprocessable
from bps.workers import describe, live_workers, queue_for_device


@pytest.fixture()
def session():
    engine = create_engine("sqlite://")
    Base.metadata.create_all(engine)
    with Session(engine) as s:
        yield s


def add_worker(session: Session, worker_id: str, device: str, age_s: float) -> None:
    session.add(WorkerRecord(id=worker_id, device=device, queues=[device], heartbeat_at=utcnow() - timedelta(seconds=age_s),
                             gpu_name="H100" if device == "gpu" else None))
    session.commit()


def test_cpu_always_goes_to_the_cpu_queue_even_with_a_gpu_worker(session):
    add_worker(session, "g1", "gpu", 1)
    assert queue_for_device(session=session, device="cpu", max_age_s=30) == "cpu"


def test_auto_goes_to_gpu_only_while_a_gpu_worker_is_alive(session):
    add_worker(session, "c1", "cpu", 1)
    assert queue_for_device(session=session, device="auto", max_age_s=30) == "cpu"
    add_worker(session, "g-stale", "gpu", 120)
    assert queue_for_device(session=session, device="auto", max_age_s=30) == "cpu"
    add_worker(session, "g-live", "gpu", 2)
    assert queue_for_device(session=session, device="auto", max_age_s=30) == "gpu"


def test_gpu_without_a_live_gpu_worker_is_refused_naming_the_field(session):
    add_worker(session, "g-stale", "gpu", 120)
    with pytest.raises(Unprocessable) as info:
        queue_for_device(session=session, device="gpu", max_age_s=30)
    assert info.value.errors[0]["loc"] == ["spec", "device"]  # as every spec error
    assert "no GPU worker" in info.value.detail
    add_worker(session, "g-live", "gpu", 0)
    assert queue_for_device(session=session, device="gpu", max_age_s=30) == "gpu"


def test_live_workers_lists_gpu_first_and_describes_them(session):
    add_worker(session, "c1", "cpu", 1)
    add_worker(session, "g1", "gpu", 1)
    add_worker(session, "old", "cpu", 500)
    workers = live_workers(session=session, max_age_s=30)
    assert [w.id for w in workers] == ["g1", "c1"]
    info = describe(workers[0])
    assert info["device"] == "gpu" and info["gpu_name"] == "H100" and info["heartbeat_at"].endswith("Z")
