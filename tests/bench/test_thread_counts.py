"""bench's forcing of the engine's kernel variants (bench threads, bench.profile_mlp_step --kernels)."""
from __future__ import annotations

import pytest

from bench import thread_counts
from worker.engine import kernel_jit


@pytest.fixture(autouse=True)
def _restore_kernel_settings(monkeypatch):
    for name in ("PARALLEL_MIN", "PARALLEL_MIN_THREADS", "DENSE_PARALLEL_MIN"):
        monkeypatch.setattr(kernel_jit, name, getattr(kernel_jit, name))


def test_parallel_forced_on_gives_the_dense_passes_the_general_threshold():
    thread_counts.force_kernel_variants(1, parallel_min=1000)
    assert (kernel_jit.PARALLEL_MIN_THREADS, kernel_jit.PARALLEL_MIN, kernel_jit.DENSE_PARALLEL_MIN) == (1, 1000, 1000)
    pair = ("serial", "parallel")
    assert kernel_jit.variant(pair, 1000) == "parallel"
    assert kernel_jit.variant(pair, 999) == "serial"


def test_serial_forced_leaves_the_dense_threshold_and_none_changes_nothing(monkeypatch):
    dense, parallel_min = kernel_jit.DENSE_PARALLEL_MIN, kernel_jit.PARALLEL_MIN
    thread_counts.force_kernel_variants(10**9)
    assert (kernel_jit.PARALLEL_MIN_THREADS, kernel_jit.PARALLEL_MIN, kernel_jit.DENSE_PARALLEL_MIN) == (
        10**9, parallel_min, dense)
    monkeypatch.setitem(kernel_jit._state, "threads", 64)  # a budget of 64 threads
    assert kernel_jit.variant(("serial", "parallel"), 10**9) == "serial"
    before = kernel_jit.PARALLEL_MIN_THREADS
    thread_counts.force_kernel_variants(None)
    assert kernel_jit.PARALLEL_MIN_THREADS == before
