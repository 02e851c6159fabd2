"""The fit loop's batch gather on the CPU: rows idx of X copied into the batch buffer.

The rows of a shuffled batch lie anywhere in X (188 MB for bench_mlp's 60,000 x 784 float32
rows: out of every cache), and NumPy's take copies them one after the other, so each row's copy
starts with a full memory latency. This loop asks for row r + ROWS_AHEAD's cache lines (a
prefetch hint) before copying row r, so the fetches of several rows overlap (the gather's share
of a step: `python -m bench.profile_mlp_step`). Where this LLVM does not compile the hint
(prefetch_compiles), the same loop without it. Same values as `np.take(X, idx, axis=0)`, bit for
bit (a copy). Prefetching the destination rows for writing as well, or the next batch's rows
during the optimizer step, was tried and not kept (no run of either was recorded).

Each gather is one source compiled twice (kernel_jit.jit_pair): it copies the batch as
contiguous ranges, each prefetching its own rows; the serial variant runs one range. From
kernel_jit.PARALLEL_MIN_THREADS threads, for a batch of at least kernel_jit.PARALLEL_MIN
elements, the parallel variant runs one range per thread. On 2 threads the serial gather runs:
`python -m bench.profile_mlp_step --rows 60000 --threads 2 --batch 1024` spent 1082-1242 µs per
step gathering with `--kernels parallel` against 1027-1029 with `--kernels serial` (2026-11-30
14:40 UTC, two runs each; the workqueue layer wakes its threads twice per call). Its gain from
4 threads is not measured yet.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from llvmlite import binding as llvm
from llvmlite import ir
from numba import prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from worker.engine import kernel_jit
from worker.engine.kernel_jit import jit, jit_pair

ROWS_AHEAD = 8  # chosen on the bench_mlp epoch among shorter, longer and no prefetch distance (no run recorded)
# LLVM's locality 2 (x86 prefetcht1): into L2 only. Into L1 (3, prefetcht0) the hints hold L1's few miss
# buffers: on Zen 4 a gather of 128 rows took 44 us against 28 us (scratch timings, not kept,
# 2026-11-30 20:27 UTC: commit 8c7a433's message)
PREFETCH_LOCALITY = 2
CACHE_LINE = 64
PREFETCH_INTRINSIC = "llvm.prefetch.p0"  # LLVM's name since opaque pointers; see prefetch_compiles
_chosen: dict[str, Any] = {}  # "kernel": the gather this process runs (_pick_kernel)


def _call_prefetch(builder: ir.IRBuilder, pointer: ir.Value) -> None:
    """A read prefetch hint for `pointer`'s cache line, into L2 (PREFETCH_LOCALITY)."""
    byte_pointer, int32 = ir.IntType(8).as_pointer(), ir.IntType(32)
    fnty = ir.FunctionType(ir.VoidType(), [byte_pointer, int32, int32, int32])
    prefetch = cgutils.get_or_insert_function(builder.module, fnty, PREFETCH_INTRINSIC)
    # (address, read, locality, data cache)
    builder.call(prefetch, [builder.bitcast(pointer, byte_pointer), ir.Constant(int32, 0),
                            ir.Constant(int32, PREFETCH_LOCALITY),
                            ir.Constant(int32, 1)])


def prefetch_compiles() -> bool:
    """Whether this LLVM compiles the prefetch call (_call_prefetch) without a call to a function
    named PREFETCH_INTRINSIC left in the code. Asked before the prefetching gather compiles: LLVM
    takes an unknown llvm.* name for an external function, and the JIT's link then aborts the
    process ("LLVM ERROR: Symbol not found"), past any except; a known one with other arguments
    fails the verifier. Asked once per process (_pick_kernel: in a prefork worker by the parent's
    warm-up, its children inherit the choice), not predicted from llvm_version_info: the IR parser
    renames older spellings (LLVM 22 compiles llvm.prefetch, llvm.prefetch.p0i8 and
    llvm.prefetch.p0 alike), so a version says little, and a wrong guess would abort the process."""
    module = ir.Module(name="prefetch_probe")
    probe = ir.Function(module, ir.FunctionType(ir.VoidType(), [ir.IntType(8).as_pointer()]), "probe")
    builder = ir.IRBuilder(probe.append_basic_block())
    _call_prefetch(builder, probe.args[0])
    builder.ret_void()
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    try:
        parsed = llvm.parse_assembly(str(module))
        parsed.verify()
        assembly = llvm.Target.from_default_triple().create_target_machine().emit_assembly(parsed)
    except RuntimeError:
        return False
    return PREFETCH_INTRINSIC not in assembly


@intrinsic
def _prefetch(typingctx, array, row, column):  # noqa: ANN001, ANN202, ARG001
    """A read prefetch hint for array[row, column]'s cache line, into L2 (PREFETCH_LOCALITY)."""
    def codegen(context, builder, signature, args):  # noqa: ANN001, ANN202
        aryty = signature.args[0]
        ary = context.make_array(aryty)(context, builder, args[0])
        _call_prefetch(builder, cgutils.get_item_pointer(context, builder, aryty, ary, [args[1], args[2]]))
        return context.get_dummy_value()
    return types.void(array, row, column), codegen


def _prefetch_row(X, row, step):
    for column in range(0, X.shape[1], step):
        _prefetch(X, row, column)


_PREFETCH_ROW = jit(_prefetch_row)


def _check_rows(idx, n):
    for r in range(idx.shape[0]):
        if idx[r] < 0 or idx[r] >= n:  # Numba does not check bounds: never read outside X
            raise IndexError("a row index is outside X")


_CHECK_ROWS = jit(_check_rows)


def _copy_rows(X, idx, out, lo, hi, ahead, step):
    """out[lo:hi] = X[idx[lo:hi]], asking for row r + ahead's cache lines before copying row r."""
    for r in range(lo, min(lo + ahead, hi)):
        _PREFETCH_ROW(X, idx[r], step)
    for r in range(lo, hi):
        if r + ahead < hi:
            _PREFETCH_ROW(X, idx[r + ahead], step)
        source, target = X[idx[r]], out[r]
        for j in range(X.shape[1]):
            target[j] = source[j]


def _copy_rows_plain(X, idx, out, lo, hi):
    for r in range(lo, hi):
        source, target = X[idx[r]], out[r]
        for j in range(X.shape[1]):
            target[j] = source[j]


_COPY_ROWS, _COPY_ROWS_PLAIN = jit(_copy_rows), jit(_copy_rows_plain)


def _gather(X, idx, out, ahead, parts):
    """out = X[idx], the batch cut into `parts` contiguous ranges (one per thread in the parallel
    variant, 1 in the serial one), each prefetching its own rows ahead."""
    _CHECK_ROWS(idx, X.shape[0])
    m, step = idx.shape[0], max(1, CACHE_LINE // X.itemsize)
    for part in prange(parts):
        _COPY_ROWS(X, idx, out, m * part // parts, m * (part + 1) // parts, ahead, step)


def _gather_plain(X, idx, out, ahead, parts):  # noqa: ARG001  (ahead: the prefetching gather's signature)
    """_gather without the prefetch hints: where this LLVM does not compile them."""
    _CHECK_ROWS(idx, X.shape[0])
    m = idx.shape[0]
    for part in prange(parts):
        _COPY_ROWS_PLAIN(X, idx, out, m * part // parts, m * (part + 1) // parts)


_GATHER, _GATHER_PLAIN = jit_pair(_gather), jit_pair(_gather_plain)  # (serial, parallel) each


def _pick_kernel() -> Any:
    """The prefetching gather's (serial, parallel) pair where prefetch_compiles(), else the plain
    one's; asked once a process."""
    if "kernel" not in _chosen:
        _chosen["kernel"] = _GATHER if prefetch_compiles() else _GATHER_PLAIN
    return _chosen["kernel"]


def gather_rows(X: np.ndarray, idx: np.ndarray, out: np.ndarray) -> np.ndarray:
    """out[:] = X[idx] for X of any rank (rows along axis 0), integer idx (m,) and out of shape
    (m, *X.shape[1:]); returns out. np.take unless both arrays are C-contiguous (a reshape
    would copy them). Raises ValueError for any other out shape: the kernel copies X's row
    length into each out row, and Numba does not check bounds."""
    need = (idx.shape[0], *X.shape[1:])
    if out.shape != need:
        raise ValueError(f"out has shape {out.shape}, the rows of X gathered by idx need {need}")
    if not (X.flags.c_contiguous and out.flags.c_contiguous) or X.ndim == 0:
        return np.take(X, idx, axis=0, out=out)
    rows, batch, pair = X.reshape(X.shape[0], -1), out.reshape(idx.shape[0], -1), _pick_kernel()
    kernel, parts = kernel_jit.variant_parts(pair, out.size)
    kernel(rows, idx, batch, ROWS_AHEAD, parts)
    return out


def warm_up(dtype: type = np.float32, variants: int = 2) -> None:
    """Compiles, or loads from Numba's disk cache, the serial (and with variants=2 the parallel)
    gather for `dtype` rows and for int64 class labels (see cpu_kernels.warm_up)."""
    pair = _pick_kernel()
    for kind in (dtype, np.int64):
        rows = np.zeros((2, 3), kind)
        for k in range(variants):
            pair[k](rows, np.array([1, 0]), np.empty_like(rows), ROWS_AHEAD, k + 1)  # parts: 1 serial, 2 parallel
