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


def test_forced_variants_names_each_choice_of_kernels():
    assert thread_counts.forced_variants("parallel", parallel_min=500) == {"min_threads": 1, "parallel_min": 500,
                                                                         "dense_min": 500}
    assert thread_counts.forced_variants("serial") == {"min_threads": 10**9, "parallel_min": None}
    assert thread_counts.forced_variants("auto", parallel_min=500) == {"parallel_min": 500}
    assert thread_counts.forced_variants(None) == {"parallel_min": None}
    with pytest.raises(ValueError, match="not 'fast'"):
        thread_counts.forced_variants("fast")


def _thresholds_seen(monkeypatch, module, name: str) -> list[tuple[int, int, int]]:
    """Replaces module.name (the bench's measurement) by a spy recording kernel_jit's thresholds."""
    seen = []
    monkeypatch.setattr(module, name, lambda *_, **__: (seen.append(thresholds()), ({}, 1.0))[1])
    return seen


@pytest.mark.parametrize("kernels", ["parallel", "serial", ""])
def test_bench_threads_children_force_the_variants_they_are_told(kernels, monkeypatch):
    """BENCH_KERNELS: the parallel variants from 2 threads (the dense passes on the general size
    threshold), the serial ones, or (unset) the engine's own thresholds."""
    before = thresholds()
    expected = {"parallel": (2, before[1], before[1]), "serial": (10**9, *before[1:]), "": before}[kernels]
    monkeypatch.setenv(bench_threads.KERNELS, kernels)
    seen = _thresholds_seen(monkeypatch, bench_threads, "_measure_here")
    bench_threads.child(2, 128)
    assert seen == [expected] and thresholds() == before


def test_profile_mlp_step_forces_the_variants_from_its_arguments(monkeypatch, capsys):
    before = thresholds()
    seen = _thresholds_seen(monkeypatch, profile_mlp_step, "profile")
    profile_mlp_step.main(["--kernels", "parallel", "--parallel-min", "500"])
    profile_mlp_step.main(["--kernels", "serial"])
    profile_mlp_step.main(["--parallel-min", "700"])
    assert seen == [(1, 500, 500), (10**9, *before[1:]), (before[0], 700, before[2])]
    assert thresholds() == before and "kernels parallel (parallel from 500 elements)" in capsys.readouterr().out
