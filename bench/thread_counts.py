"""The thread counts the engine benchmarks compare: one thread, every core, and each side's
defaults (ours: the worker policy, `worker.engine.threads.default_threads`;
PyTorch: its own default, `torch.get_num_threads()` as it was before any benchmark set it)."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from worker.engine.threads import available_cores, default_threads

DEFAULTS = None  # each side at its own default
SERIAL = {"min_threads": 10**9}  # kernel_variants: every kernel's serial variant, whatever the thread count
_torch_default: list[int] = []


def counts(requested: int | None, sweep: bool = False) -> list[int | None]:
    """[requested] when given; with `sweep`, 1, 2, 4, ... up to every core, then DEFAULTS;
    else [1, every core, DEFAULTS] (no repeat on one core)."""
    if requested:
        return [requested]
    cores = available_cores()
    if sweep:
        powers = [1 << k for k in range(cores.bit_length()) if 1 << k < cores]
        return [*powers, cores, DEFAULTS]
    return [1, cores, DEFAULTS] if cores > 1 else [1, DEFAULTS]


def ours(threads: int | None) -> int:
    """The count our engine runs with for `threads` (DEFAULTS: what a worker job would get)."""
    return threads or default_threads()


def use_torch_threads(threads: int | None) -> int:
    """Sets PyTorch's intra-op threads (DEFAULTS: its own default); returns the count set."""
    import torch  # noqa: PLC0415

    if not _torch_default:
        _torch_default.append(torch.get_num_threads())
    torch.set_num_threads(threads or _torch_default[0])
    return torch.get_num_threads()


def label(threads: int | None) -> str:
    if threads is DEFAULTS:
        return f"defaults (ours {ours(None)}, PyTorch {use_torch_threads(None)} threads)"
    return f"{threads} thread{'s' if threads > 1 else ''} each"


@contextmanager
def kernel_variants(min_threads: int | None = None, parallel_min: int | None = None,
                    dense_min: int | None = None) -> Iterator[None]:
    """Forces the engine's kernel variants in this process (kernel_jit.variant) while the block
    runs, then restores kernel_jit's thresholds: PARALLEL_MIN_THREADS = min_threads (a huge count:
    serial always; 1 or 2: parallel from that many threads), PARALLEL_MIN = parallel_min and the
    dense passes' DENSE_PARALLEL_MIN = dense_min; None leaves each as it is. bench threads and
    bench.profile_mlp_step --kernels use it."""
    from worker.engine import kernel_jit  # noqa: PLC0415

    forced = {"PARALLEL_MIN_THREADS": min_threads, "PARALLEL_MIN": parallel_min, "DENSE_PARALLEL_MIN": dense_min}
    before = {name: getattr(kernel_jit, name) for name in forced}
    try:
        for name, value in forced.items():
            if value is not None:
                setattr(kernel_jit, name, value)
        yield
    finally:
        for name, value in before.items():
            setattr(kernel_jit, name, value)


def all_parallel(min_threads: int = 1, parallel_min: int | None = None) -> dict[str, int]:
    """kernel_variants' settings for every kernel's parallel variant from `min_threads` threads,
    the dense passes included: they get the general size threshold (parallel_min, or
    kernel_jit.PARALLEL_MIN) instead of their own DENSE_PARALLEL_MIN."""
    from worker.engine import kernel_jit  # noqa: PLC0415

    threshold = kernel_jit.PARALLEL_MIN if parallel_min is None else parallel_min
    return {"min_threads": min_threads, "parallel_min": threshold, "dense_min": threshold}


def forced_variants(kernels: str | None, min_threads: int = 1,
                    parallel_min: int | None = None) -> dict[str, int | None]:
    """kernel_variants' settings for a bench's choice of kernels: "serial" every kernel's serial
    variant, "parallel" every parallel one from `min_threads` threads (all_parallel), None or
    "auto" the engine's own choice; `parallel_min` (None: as it is) sets kernel_jit.PARALLEL_MIN.
    bench threads' children (BENCH_KERNELS) and bench.profile_mlp_step --kernels use it."""
    if kernels == "parallel":
        return all_parallel(min_threads, parallel_min)
    if kernels not in ("serial", "auto", None):
        raise ValueError(f"kernels must be serial, parallel or auto, not {kernels!r}")
    return {**(SERIAL if kernels == "serial" else {}), "parallel_min": parallel_min}
