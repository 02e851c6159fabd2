"""worker.main: the pool a `bps worker` runs (GPU workers never fork)."""
from __future__ import annotations

import pytest

from worker.main import worker_pool


@pytest.mark.parametrize(("queues", "concurrency", "pool"), [
    (["cpu"], 1, "solo"), (["cpu"], 4, "prefork"), (["gpu"], 1, "solo"), (["cpu", "gpu"], 2, "threads"),
])
def test_gpu_workers_never_fork(queues, concurrency, pool):
    assert worker_pool(queues, concurrency) == pool
