"""bench's forcing of the engine's kernel variants (bench threads, bench.profile_mlp_step --kernels):
in force while its block runs, kernel_jit's thresholds restored after."""
from __future__ import annotations

import pytest

from bench import bench_threads, profile_mlp_step, thread_counts
from worker.engine import kernel_jit

NAMES = ("PARALLEL_MIN_THREADS", "PARALLEL_MIN", "DENSE_PARALLEL_MIN")


def thresholds() -> tuple[int, int, int]:
    return tuple(getattr(kernel_jit, name) for name in NAMES)


@pytest.fixture(autouse=True)
def _restore_kernel_settings(monkeypatch):
    for name in NAMES:  # a failing test leaves the others the engine's values
        monkeypatch.setattr(kernel_jit, name, getattr(kernel_jit, name))


def test_all_parallel_gives_the_dense_passes_the_general_threshold_inside_the_block_only():
    before = thresholds()
    with thread_counts.kernel_variants(**thread_counts.all_parallel(parallel_min=1000)):
        assert thresholds() == (1, 1000, 1000)
        pair = ("serial", "parallel")
        assert kernel_jit.variant(pair, 1000) == "parallel"
        assert kernel_jit.variant(pair, 999) == "serial"
        assert kernel_jit.variant(pair, 1000, kernel_jit.DENSE_PARALLEL_MIN) == "parallel"
    assert thresholds() == before


def test_serial_leaves_the_size_thresholds_and_is_undone_after_an_error(monkeypatch):
    before = thresholds()
    with pytest.raises(RuntimeError), thread_counts.kernel_variants(**thread_counts.SERIAL):
        assert thresholds() == (10**9, *before[1:])
        monkeypatch.setitem(kernel_jit._state, "threads", 64)  # a budget of 64 threads
        assert kernel_jit.variant(("serial", "parallel"), 10**9) == "serial"
        raise RuntimeError
    assert thresholds() == before


def test_no_setting_changes_nothing():
    before = thresholds()
    with thread_counts.kernel_variants():
        assert thresholds() == before


def test_the_benches_name_their_forced_variants():
    assert bench_threads.child_kernels("parallel") == {
        "min_threads": 2, "parallel_min": kernel_jit.PARALLEL_MIN, "dense_min": kernel_jit.PARALLEL_MIN}
    assert bench_threads.child_kernels("serial") == {"min_threads": 10**9}
    assert bench_threads.child_kernels(None) == {}
    assert profile_mlp_step.forced_variants("parallel", 500) == {"min_threads": 1, "parallel_min": 500,
                                                                 "dense_min": 500}
    assert profile_mlp_step.forced_variants("serial", None) == {"min_threads": 10**9, "parallel_min": None}
    assert profile_mlp_step.forced_variants("auto", 500) == {"parallel_min": 500}
