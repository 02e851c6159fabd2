"""The thread counts the engine benchmarks compare: one thread, every core, and each side's
defaults (ours: the worker policy, `worker.engine.threads.job_threads`, or BPS_BLAS_THREADS;
PyTorch: its own default, `torch.get_num_threads()` as it was before any benchmark set it)."""
from __future__ import annotations

from worker.engine.threads import available_cores, configured_threads, job_threads

DEFAULTS = None  # each side at its own default
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
    return threads or configured_threads() or job_threads()


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


def force_kernel_variants(min_threads: int | None, parallel_min: int | None = None) -> None:
    """Forces the engine's kernel variants in this process (kernel_jit.variant) whatever the
    thread count: kernel_jit.PARALLEL_MIN_THREADS = min_threads (a huge count: serial always; 2 or
    fewer: parallel from that many threads, the dense passes then on the general size threshold
    too, as before DENSE_PARALLEL_MIN; None: the engine's choice) and kernel_jit.PARALLEL_MIN =
    parallel_min (None: unchanged). bench threads and bench.profile_mlp_step --kernels use it."""
    from worker.engine import kernel_jit  # noqa: PLC0415

    if parallel_min is not None:
        kernel_jit.PARALLEL_MIN = parallel_min
    if min_threads is None:
        return
    kernel_jit.PARALLEL_MIN_THREADS = min_threads
    if min_threads <= 2:
        kernel_jit.DENSE_PARALLEL_MIN = kernel_jit.PARALLEL_MIN
