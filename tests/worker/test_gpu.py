"""GPU housekeeping without a GPU: a stand-in `cupy` module records what the worker does."""
from __future__ import annotations

import sys
import types

import pytest

from worker.gpu import is_gpu_out_of_memory, release_gpu_memory
from worker.runner import describe_error


class FakePool:
    def __init__(self) -> None:
        self.freed = 0

    def free_all_blocks(self) -> None:
        self.freed += 1


@pytest.fixture
def fake_cupy(monkeypatch):  # noqa: ANN001, ANN201
    module = types.ModuleType("cupy")
    module.pool, module.pinned = FakePool(), FakePool()
    module.get_default_memory_pool = lambda: module.pool
    module.get_default_pinned_memory_pool = lambda: module.pinned
    monkeypatch.setitem(sys.modules, "cupy", module)
    return module


def test_release_frees_both_pools_when_cupy_was_used(fake_cupy) -> None:  # noqa: ANN001
    release_gpu_memory()
    assert (fake_cupy.pool.freed, fake_cupy.pinned.freed) == (1, 1)


def test_release_never_imports_cupy_in_a_cpu_worker(monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.delitem(sys.modules, "cupy", raising=False)
    release_gpu_memory()
    assert "cupy" not in sys.modules


def cupy_error(name: str, message: str) -> BaseException:
    cls = type(name, (Exception,), {"__module__": "cupy.cuda.memory"})
    return cls(message)


def test_gpu_out_of_memory_becomes_a_sentence_naming_the_limit(monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setenv("CUPY_GPU_MEMORY_LIMIT", "50%")
    error = cupy_error("OutOfMemoryError", "Out of memory allocating 1,024 bytes")
    assert is_gpu_out_of_memory(error)
    message = describe_error(error)
    assert message.startswith("the model does not fit in the GPU's memory (CUPY_GPU_MEMORY_LIMIT=50%)")
    assert "batch_size" in message and '"device": "cpu"' in message


def test_other_errors_are_not_taken_for_gpu_memory() -> None:
    assert not is_gpu_out_of_memory(MemoryError("host"))
    assert not is_gpu_out_of_memory(cupy_error("CUDARuntimeError", "invalid device ordinal"))


@pytest.mark.gpu
def test_a_whole_job_runs_on_the_gpu_queue(settings) -> None:  # noqa: ANN001
    from bps.db import session_scope
    from bps.models import Job
    from tests.worker.test_runner import add_job, classifier_spec, job_row
    from worker.runner import run_job

    job_id = add_job(settings, classifier_spec(device="gpu"))
    with session_scope(settings.database_url) as session:
        session.get(Job, job_id).queue = "gpu"
    run_job(job_id, settings=settings, worker_id="gpu-worker")
    job = job_row(settings, job_id)
    assert job.status == "succeeded", job.error
    assert job.device == "gpu" and job.metrics["accuracy"] > 0.9
