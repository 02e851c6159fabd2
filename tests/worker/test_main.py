"""worker.main: the pool a `bps worker` runs (GPU workers never fork), each job's share of the cores."""
from __future__ import annotations

import pytest

from worker.engine import cpu_kernels, threads
from worker.main import prepare_engine, worker_pool


@pytest.mark.parametrize(("queues", "concurrency", "pool"), [
    (["cpu"], 1, "solo"), (["cpu"], 4, "prefork"), (["gpu"], 1, "solo"), (["cpu", "gpu"], 2, "threads"),
])
def test_gpu_workers_never_fork(queues, concurrency, pool):
    assert worker_pool(queues, concurrency) == pool


def test_a_worker_gives_each_job_its_share_of_the_cores_and_warms_the_kernels(monkeypatch):
    warmed = []
    # what warm_up() compiles for: a worker job's count, as the concurrency just set makes it
    monkeypatch.setattr(cpu_kernels, "warm_up", lambda: warmed.append(threads.default_threads()))
    monkeypatch.setattr(threads, "available_cores", lambda: 16)
    monkeypatch.delenv(threads.ENV, raising=False)
    try:
        prepare_engine(4)
        assert threads.job_threads() == 4 and warmed == [4]  # the parallel kernels too (test_cpu_kernels)
        prepare_engine(8)
        assert threads.job_threads() == 2 and warmed == [4, 2]
    finally:
        threads.set_concurrency(1)
    assert threads.job_threads() == 16
