"""How many threads a training job uses, and one budget shared by OpenBLAS and Numba.

A job's threads: `BPS_BLAS_THREADS` when set (then all of the engine's threads: the BLAS
products and the parallel CPU kernels alike), else the cores this process may run on divided by
the jobs its worker runs at once (`bps worker --concurrency`, recorded by `set_concurrency`),
at least one. The tests and CI set one thread.

`thread_budget(n)` holds both pools to n for the duration of a `fit`: OpenBLAS through
threadpoolctl and Numba's parallel kernels through `cpu_kernels.use_threads`, which picks a
kernel's parallel variant only when n >= 4 (kernel_jit: on 2 cores they lost), the work is large
enough and the caller is the main thread (a job run by a threads pool keeps its Numba work
serial; its products still use n). The
two pools take turns (a step alternates products and kernels), so n each never oversubscribes
the cores; OpenBLAS's idle threads stop spinning after about 0.4 ms
(`bps.openblas.park_idle_threads`), so an idle job does not hold its cores.
"""
from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from threadpoolctl import threadpool_limits

ENV = "BPS_BLAS_THREADS"
_jobs_at_once = 1


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity), else the machine's count."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def set_concurrency(jobs: int) -> None:
    """Called by a worker before it starts: how many jobs it runs at once (forked pool
    processes inherit it)."""
    global _jobs_at_once
    _jobs_at_once = max(1, int(jobs))


def configured_threads() -> int | None:
    """BPS_BLAS_THREADS when set (a positive integer), else None."""
    value = os.environ.get(ENV, "").strip()
    if not value:
        return None
    threads = int(value)
    if threads < 1:
        raise ValueError(f"{ENV} must be a positive integer, got {value!r}")
    return threads


def job_threads() -> int:
    """The default share of one job: cores // jobs at once, at least 1."""
    return max(1, available_cores() // _jobs_at_once)


def default_threads() -> int:
    """The count a worker job runs with unless told otherwise: BPS_BLAS_THREADS, else its share."""
    return configured_threads() or job_threads()


@contextmanager
def thread_budget(threads: int, kernels: bool) -> Iterator[None]:
    """OpenBLAS limited to `threads`, and (`kernels`: training on NumPy) the fused CPU
    kernels allowed as many, while the block runs."""
    with threadpool_limits(limits=threads, user_api="blas"):
        if not kernels:
            yield
            return
        from worker.engine import cpu_kernels  # noqa: PLC0415  (Numba: only where training runs)

        own = threads if threading.current_thread() is threading.main_thread() else 1
        previous = cpu_kernels.use_threads(own)
        try:
            yield
        finally:
            cpu_kernels.use_threads(previous)
