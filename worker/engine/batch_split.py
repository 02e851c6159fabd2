"""Batch-split parallelism: a layer's work on the parts of its batch at once, one thread each.

On 2 cores OpenBLAS's second thread only helps the products, and Numba's parallel variants lost
to their wake-up cost (kernel_jit), so im2col/col2im, pooling and the recurrent gate math ran on
one core. `run(rows, work)` instead calls `work(lo, hi, part)` for contiguous row ranges of the
batch, part 0 in the calling thread and the others in persistent helper threads, with OpenBLAS
on one thread for the duration (each part's products run in its own thread); the Numba kernels
are compiled nogil and NumPy's matmul and ufuncs release the GIL, so the parts overlap. One
hand-off each way per call (spin.Signal: a few µs where a lock's wake-up took tens): a layer
splits once per forward or backward (a recurrent layer its whole time loop), never per step.

Used while the budget (`kernel_jit.threads_in_use`) is 2 or 3 threads, the caller is the main
thread, each part gets at least MIN_PART_ROWS rows and the pass, when its caller says how many
array elements it touches, at least MIN_SPLIT_ELEMENTS (a shorter one gains less than the
hand-off costs; the bench CNN's second max-pool is below it); from
PARALLEL_MIN_THREADS threads the kernels' own parallel variants and multi-threaded products stay
in charge. On a 16-core host (`python -m bench threads --threads 16`, 2026-11-30 11:15 UTC, batch
1024 best of two and batch 128 one run, before this session's conv and LSTM changes) the split at
16 threads with serial kernels gave no consistent gain: CNN epochs 0.220 and 0.263 s against 0.179
and 0.186 with the parallel variants, LSTM 0.154 and 0.275 s against 0.222 and 0.246. The
helpers are created lazily in the process that uses them and forgotten in a forked child (a
Celery prefork child forks after import), which makes its own.
"""
from __future__ import annotations

import os
import threading
from collections.abc import Callable
from contextlib import contextmanager
from typing import Any

MIN_PART_ROWS = 8
MIN_SPLIT_ELEMENTS = 1 << 17
_state: dict[str, Any] = {"helpers": [], "blas": None, "forced": None}


class _Helper:
    """A daemon thread that runs one job at a time, handed over through two spin.Signals."""

    def __init__(self) -> None:
        from worker.engine.spin import Signal  # noqa: PLC0415  (Numba: only where training runs)

        self._go, self._done, self._jobs = Signal(), Signal(), 0
        self._job: Callable[[], None] | None = None
        self.error: BaseException | None = None
        threading.Thread(target=self._loop, name="bps-batch-split", daemon=True).start()

    def _loop(self) -> None:
        jobs = 0
        while True:
            jobs += 1
            self._go.wait_for(jobs)
            try:
                self._job()
            except BaseException as error:  # noqa: BLE001  (re-raised in the caller's thread)
                self.error = error
            self._done.raise_to(jobs)

    def start(self, job: Callable[[], None]) -> None:
        self._job, self.error = job, None
        self._jobs += 1
        self._go.raise_to(self._jobs)

    def wait(self) -> None:
        self._done.wait_for(self._jobs)


def _forget_helpers() -> None:
    _state["helpers"] = []


os.register_at_fork(after_in_child=_forget_helpers)


def _helpers(count: int) -> list[_Helper]:
    helpers = _state["helpers"]
    while len(helpers) < count:
        helpers.append(_Helper())
    return helpers[:count]


def _blas_libs() -> list[Any]:
    """threadpoolctl's controllers of the loaded BLAS libraries, looked up once per process."""
    if _state["blas"] is None:
        from threadpoolctl import ThreadpoolController  # noqa: PLC0415

        _state["blas"] = ThreadpoolController().select(user_api="blas").lib_controllers
    return _state["blas"]


@contextmanager
def one_blas_thread() -> Any:
    libs = _blas_libs()
    before = [lib.num_threads for lib in libs]
    for lib in libs:
        lib.set_num_threads(1)
    try:
        yield
    finally:
        for lib, threads in zip(libs, before):
            lib.set_num_threads(threads)


@contextmanager
def _serial_kernels() -> Any:
    """The kernels' serial variants in every part: Numba's workqueue layer runs one parallel
    region at a time (only a forced split meets a budget of PARALLEL_MIN_THREADS)."""
    from worker.engine import kernel_jit  # noqa: PLC0415  (Numba: only where training runs)

    budget = kernel_jit.threads_in_use()
    if budget < kernel_jit.PARALLEL_MIN_THREADS:
        yield
        return
    kernel_jit.use_threads(1)
    try:
        yield
    finally:
        kernel_jit.use_threads(budget)


@contextmanager
def forced(parts: int | None) -> Any:
    """Tests: split into `parts` whatever the budget and batch (1: never split); None: the rule."""
    before, _state["forced"] = _state["forced"], parts
    try:
        yield
    finally:
        _state["forced"] = before


def parts_for(rows: int, elements: int | None = None) -> int:
    """How many parts a batch of `rows` is split into now (1: not split); `elements`: how many
    array elements the caller's pass over the whole batch touches, if it says (below
    MIN_SPLIT_ELEMENTS, one part unless a test forces them)."""
    if _state["forced"] is not None:
        return max(1, min(_state["forced"], rows))
    if elements is not None and elements < MIN_SPLIT_ELEMENTS:
        return 1
    from worker.engine import kernel_jit  # noqa: PLC0415

    threads = kernel_jit.threads_in_use()
    if not 2 <= threads < kernel_jit.PARALLEL_MIN_THREADS:
        return 1
    if threading.current_thread() is not threading.main_thread():
        return 1
    return max(1, min(threads, rows // MIN_PART_ROWS))


def bounds(rows: int, parts: int) -> list[tuple[int, int]]:
    """`parts` contiguous (lo, hi) row ranges covering `rows`, sizes differing by at most one."""
    cuts = [rows * k // parts for k in range(parts + 1)]
    return list(zip(cuts[:-1], cuts[1:]))


def run(rows: int, work: Callable[[int, int, int], None], parts: int | None = None) -> int:
    """work(lo, hi, part) for each part of `rows`, all at once; returns the number of parts.
    With one part, work(0, rows, 0) runs here with the BLAS threads as they are."""
    parts = parts_for(rows) if parts is None else parts
    if parts == 1:
        work(0, rows, 0)
        return 1
    ranges = bounds(rows, parts)
    helpers = _helpers(parts - 1)
    with one_blas_thread(), _serial_kernels():
        for part, helper in enumerate(helpers, start=1):
            lo, hi = ranges[part]
            helper.start(lambda lo=lo, hi=hi, part=part: work(lo, hi, part))
        try:
            work(*ranges[0], 0)
        finally:
            for helper in helpers:
                helper.wait()
    for helper in helpers:
        if helper.error is not None:
            raise helper.error
    return parts
