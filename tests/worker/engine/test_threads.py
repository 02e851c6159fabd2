"""The thread policy: a job's share of the cores, BPS_BLAS_THREADS, and one budget for both pools."""
from __future__ import annotations

import os
import threading

import numpy as np
import pytest
from threadpoolctl import threadpool_info

from tests.worker.engine.conftest import mlp_spec
from worker.engine import Network, kernel_jit, threads


def blas_threads() -> int:
    return next(i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas")


@pytest.fixture
def sixteen_cores(monkeypatch):
    monkeypatch.setattr(threads, "available_cores", lambda: 16)
    yield
    threads.set_concurrency(1)


@pytest.mark.parametrize(("jobs", "share"), [(1, 16), (2, 8), (3, 5), (16, 1), (40, 1)])
def test_a_job_gets_the_cores_divided_by_the_jobs_its_worker_runs_at_once(sixteen_cores, jobs, share):
    threads.set_concurrency(jobs)
    assert threads.job_threads() == share


def test_blas_threads_variable_overrides_and_must_be_positive(monkeypatch):
    monkeypatch.delenv(threads.ENV, raising=False)
    assert threads.configured_threads() is None
    monkeypatch.setenv(threads.ENV, "3")
    assert threads.configured_threads() == 3
    assert Network.from_spec(mlp_spec((4, "relu")), input_shape=(2,), n_outputs=2).n_threads == 3
    monkeypatch.setenv(threads.ENV, "0")
    with pytest.raises(ValueError, match="BPS_BLAS_THREADS must be a positive integer"):
        threads.configured_threads()


def test_a_jobs_default_count_is_the_variable_else_its_share(sixteen_cores, monkeypatch):
    """The count the worker's warm-up and the benches' defaults use."""
    threads.set_concurrency(4)
    monkeypatch.setenv(threads.ENV, "3")
    assert threads.default_threads() == 3
    monkeypatch.delenv(threads.ENV)
    assert threads.default_threads() == 4


def test_available_cores_is_this_process_affinity():
    assert threads.available_cores() == len(os.sched_getaffinity(0))


def test_the_budget_holds_blas_and_kernels_to_the_same_count_and_restores_both():
    before_blas, before_kernels = blas_threads(), kernel_jit.threads_in_use()
    with threads.thread_budget(2, kernels=True):
        assert blas_threads() == 2 and kernel_jit.threads_in_use() == 2
        seen = {}
        worker = threading.Thread(target=lambda: seen.setdefault("kernels", _budget_in_thread()))
        worker.start()
        worker.join()
        assert seen["kernels"] == 1  # a pool thread's Numba work stays serial
    assert (blas_threads(), kernel_jit.threads_in_use()) == (before_blas, before_kernels)


def _budget_in_thread() -> int:
    with threads.thread_budget(4, kernels=True):
        return kernel_jit.threads_in_use()


def test_fit_trains_under_the_networks_thread_count(rng):
    net = Network.from_spec(mlp_spec((8, "relu"), epochs=2), input_shape=(3,), n_outputs=2)
    net.n_threads = 2
    seen = []
    net.fit(rng.standard_normal((32, 3)), rng.integers(0, 2, 32),
            on_epoch=lambda record: seen.append((blas_threads(), kernel_jit.threads_in_use())))
    assert seen == [(2, 2), (2, 2)]
    assert kernel_jit.threads_in_use() == 1


def test_fit_without_a_setting_uses_the_job_share(rng, monkeypatch, sixteen_cores):
    threads.set_concurrency(8)
    net = Network.from_spec(mlp_spec((8, "relu"), epochs=1), input_shape=(3,), n_outputs=2)
    net.n_threads = None
    seen = []
    net.fit(rng.standard_normal((16, 3)).astype(np.float32), rng.integers(0, 2, 16),
            on_epoch=lambda record: seen.append(blas_threads()))
    assert seen == [2]


def test_kernels_go_parallel_only_from_four_threads_and_on_large_passes():
    pair = ("serial", "parallel")
    previous = kernel_jit.use_threads(2)
    try:
        assert kernel_jit.variant(pair, 10**7) == "serial"  # on 2 cores the parallel variants lost
        kernel_jit.use_threads(4)
        assert kernel_jit.variant(pair, kernel_jit.PARALLEL_MIN) == "parallel"
        assert kernel_jit.variant(pair, kernel_jit.PARALLEL_MIN - 1) == "serial"
        dense = kernel_jit.DENSE_PARALLEL_MIN  # the dense passes' parallel variants lost at 16 threads
        assert kernel_jit.variant(pair, kernel_jit.PARALLEL_MIN, dense) == "serial"
        assert kernel_jit.variant(pair, dense, dense) == "parallel"
    finally:
        kernel_jit.use_threads(previous)
