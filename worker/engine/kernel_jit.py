"""How the fused CPU kernels are compiled (Numba) and which variant of a kernel runs.

Every kernel that can use several cores is compiled twice from the same source: a serial variant
(`prange` runs as `range`) and a parallel one. `variant(pair, size)` picks the parallel one only
when this thread's budget (`use_threads`, set by `threads.thread_budget`) is at least
PARALLEL_MIN_THREADS and the call touches at least PARALLEL_MIN elements. Waking the pool's threads
and waiting for them costs tens of microseconds per call: more than a pass over a dense layer's
(128, 256) activations takes (128 KiB: a few µs at memory speed, an estimate), and on 2 cores more
than even the convolution's passes gain (`python -m bench threads`, 2026-11-30 19:52 UTC, a 2-core
Zen 4: a CNN epoch took 2.29x the engine's choice with the parallel variants forced on, 1.37x with
serial kernels and no batch split), so on fewer than 4 threads every kernel runs serially and the
cores go to the BLAS products. From 4 threads the passes over a whole batch go parallel, except the
dense layer's bias+ReLU and ReLU backward (cpu_kernels), which need DENSE_PARALLEL_MIN elements: on
the 16-core host of the GPU machine (2026-11-30, 11:12-11:17 UTC) their parallel variants lost at a
(1024, 256) batch, 2**18 elements:
`python -m bench.profile_mlp_step --rows 60000 --threads 16 --batch 1024` spent 1732-2950 and
2467-5018 µs per step in forward and backward with them (two runs; the default then,
`--kernels parallel` since) against 999-1226 and 1345-1611 with `--kernels serial` (two runs), and
`python -m bench threads --threads 16 --batch 1024` timed the MLP epoch 0.078-0.087 s with serial
kernels against 0.108-0.148 s with the parallel ones (the engine's own choice and parallel forced,
two runs), where the CNN's conv, pooling and im2col passes gained from theirs (0.179-0.195 s against
0.220-0.279 s). DENSE_PARALLEL_MIN, 8 times that, is where a pass moves 8 MiB: not measured.

Numba's "workqueue" threading layer unless NUMBA_THREADING_LAYER says otherwise: it is
fork-safe (a prefork worker's parent warms the kernels; GNU OpenMP aborts a child forked after
it ran) and its idle threads sleep, where OpenMP's spin for milliseconds after each parallel loop,
taking a core from the OpenBLAS product that follows (`python -m bench threads` compares them).
The budget never lets two threads of one process run parallel kernels at once (see threads.py),
which the workqueue layer does not support.
Numba's "tbb" layer (pip `tbb` 2023.2.0; its libtbb.so.12 lands in <venv>/lib, off the loader's
path: Numba finds it only once loaded with RTLD_GLOBAL) is fork-safe too and cheaper per call
(several times, in a scratch timing of a small prange at 2 threads, not kept, 2026-11-30
15:00-15:05 UTC). It was not adopted: in scratch A/Bs (not kept, 15:34-15:38 and 17:35-18:02
UTC, noisy) the parallel variants from 2 threads on tbb made the MLP (batch 1024) and CNN
epochs slower than the engine's choice (the batch split goes off); the LSTM's was faster in
the first and no better than the noise in the second.
"""
from __future__ import annotations

import os
import types
from collections.abc import Callable
from typing import Any

import numba

FAST = {"reassoc", "contract", "nsz", "arcp"}
PARALLEL_MIN = 262_144
DENSE_PARALLEL_MIN = 2_097_152
PARALLEL_MIN_THREADS = 4
if "NUMBA_THREADING_LAYER" not in os.environ:
    numba.config.THREADING_LAYER = "workqueue"
_state = {"threads": 1}


def jit(function: Callable, parallel: bool = False, error_model: str = "python") -> Any:
    """njit with the project's flags; cached on disk when a writable cache location exists.
    error_model="numpy": a float division by zero gives inf/nan instead of raising, and loops
    with divisions can vectorise (Numba's zero check otherwise keeps them scalar)."""
    flags = {"nogil": True, "fastmath": FAST, "parallel": parallel, "error_model": error_model}
    try:
        return numba.njit(cache=True, **flags)(function)
    except RuntimeError:  # no writable cache location (read-only install, no home): compile per process
        return numba.njit(cache=False, **flags)(function)


def jit_pair(function: Callable) -> tuple[Any, Any]:
    """(serial, parallel) compilations of `function`; the parallel one under its own name, so
    that the two never share a disk-cache entry."""
    twin = types.FunctionType(function.__code__, function.__globals__, f"{function.__name__}_parallel",
                              function.__defaults__, function.__closure__)
    twin.__qualname__ = f"{function.__qualname__}_parallel"
    twin.__doc__ = function.__doc__
    return jit(function), jit(twin, parallel=True)


def use_threads(threads: int) -> int:
    """Lets the parallel variants use `threads` threads from now on in this thread; returns the
    previous budget."""
    previous, threads = _state["threads"], max(1, int(threads))
    _state["threads"] = threads
    if threads > 1:
        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    return previous


def threads_in_use() -> int:
    return _state["threads"]


def parallel_at(threads: int) -> bool:
    """Whether a budget of `threads` threads runs parallel variants at all (goes_parallel's thread
    rule; below it only the serial ones ever run)."""
    return threads >= PARALLEL_MIN_THREADS


def goes_parallel(size: int, minimum: int | None = None) -> bool:
    """Whether a kernel's call touching `size` elements runs its parallel variant now; `minimum`:
    the kernel's own threshold instead of PARALLEL_MIN."""
    threshold = PARALLEL_MIN if minimum is None else minimum
    return parallel_at(_state["threads"]) and size >= threshold


def variant(pair: tuple[Any, Any], size: int, minimum: int | None = None) -> Any:
    """The serial or the parallel compilation of a kernel (goes_parallel)."""
    return pair[1] if goes_parallel(size, minimum) else pair[0]


def variant_parts(pair: tuple[Any, Any], size: int) -> tuple[Any, int]:
    """(kernel, parts): the parallel variant and a part per thread where goes_parallel(size),
    else the serial one and one part."""
    return (pair[1], parallel_parts()) if goes_parallel(size) else (pair[0], 1)


def parallel_parts() -> int:
    """How many threads a parallel variant runs on now: the budget, at most Numba's pool."""
    return max(1, min(_state["threads"], numba.config.NUMBA_NUM_THREADS))
