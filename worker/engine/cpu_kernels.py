"""Fused CPU loops (Numba) for the per-step work NumPy would spread over many passes.

Softmax cross-entropy on (N, K) logits is ten small NumPy calls; here it is two loops around
NumPy's (SIMD) exp, which also count the correct predictions. A ReLU dense layer adds its bias
and applies ReLU in one pass, and masks its gradient while summing the bias gradient in another.
The optimizer step's one pass is in cpu_optimizer_steps. Results equal the NumPy formulations
(`losses.py`, `activations.py`, still used on CuPy) up to rounding order: sums are reassociated
for SIMD, multiply-adds may fuse.

Each public kernel runs a serial or a parallel compilation (kernel_jit.variant, by size), the
parallel one splitting rows or column blocks.

Compiled on first use per dtype and cached on disk (Numba's `cache=True`; without a writable
cache location, compiled in each process instead). Training only: prediction, and so the API
process, never loads Numba. No `nnan`/`ninf` fast-math flags: a NaN or an infinity must still
reach the loss, where the fit loop reports divergence.
"""
from __future__ import annotations

import math

import numpy as np
from numba import prange

from worker.engine import kernel_jit
from worker.engine.kernel_jit import jit as _jit
from worker.engine.kernel_jit import jit_pair, use_threads, variant

__all__ = ["bias_relu", "relu_backward_bias", "softmax_cross_entropy", "use_threads", "warm_up"]
COLUMN_BLOCK = 64


@_jit
def _check_labels(y, k):
    for r in range(y.shape[0]):
        if y[r] < 0 or y[r] >= k:  # Numba does not check bounds: never write outside a row
            raise IndexError("a class label is outside the output layer's units")


def _softmax_shift(logits, y, grad):
    """grad <- logits - each row's max; returns (sum of the targets' shifted logits, rows whose
    first largest logit is the target)."""
    n, k = logits.shape
    _check_labels(y, k)
    picked, correct = 0.0, 0
    for r in prange(n):
        row, out, target = logits[r], grad[r], y[r]
        top, arg = row[0], 0
        for j in range(1, k):
            if row[j] > top:
                top, arg = row[j], j
        for j in range(k):
            out[j] = row[j] - top
        picked += out[target]
        correct += 1 if arg == target else 0
    return picked, correct


def _softmax_finish(grad, y, inv_n):
    """grad holds exp(shifted logits): each row <- row / its sum * inv_n, minus inv_n at the
    target; returns the sum of the rows' log-sum-exps."""
    zero = np.zeros(1, grad.dtype)[0]  # typed zero made once (made per row, it allocated)
    total = 0.0
    for r in prange(grad.shape[0]):
        out = grad[r]
        sum_exp = zero
        for j in range(out.shape[0]):
            sum_exp += out[j]
        total += math.log(sum_exp)
        scale = inv_n / sum_exp
        for j in range(out.shape[0]):
            out[j] *= scale
        out[y[r]] -= inv_n
    return total


_SOFTMAX_SHIFT, _SOFTMAX_FINISH = jit_pair(_softmax_shift), jit_pair(_softmax_finish)


def softmax_cross_entropy(logits, y, grad, inv_n):  # noqa: ANN001, ANN201
    """logits (N, K), y (N,) int class indices, grad (N, K) out = (softmax - onehot) / N;
    inv_n = 1/N in the logits' dtype. Returns (mean loss as float64, rows whose first largest
    logit is the target, as np.argmax counts them). The exponentials are NumPy's (SIMD): in the
    loop each was a scalar libm call, most of the kernel's time."""
    picked, correct = variant(_SOFTMAX_SHIFT, logits.size)(logits, y, grad)
    np.exp(grad, out=grad)
    return (variant(_SOFTMAX_FINISH, logits.size)(grad, y, inv_n) - picked) / logits.shape[0], correct


def _bias_relu(z, bias):
    zero = np.zeros(1, z.dtype)[0]  # typed: a bare 0 would promote the loop to float64
    for r in prange(z.shape[0]):
        row = z[r]
        for j in range(row.shape[0]):
            v = row[j] + bias[j]
            row[j] = zero if v < zero else v


_BIAS_RELU = jit_pair(_bias_relu)


def bias_relu(z, bias):  # noqa: ANN001, ANN201
    """z (N, F) <- max(z + bias, 0) in place; NaN stays NaN, as with np.maximum."""
    variant(_BIAS_RELU, z.size, kernel_jit.DENSE_PARALLEL_MIN)(z, bias)


def _relu_backward_bias(grad, a, grad_bias):
    zero = np.zeros(1, grad.dtype)[0]
    n, f = grad.shape
    for block in prange((f + COLUMN_BLOCK - 1) // COLUMN_BLOCK):  # each column's sum in row order
        lo, hi = block * COLUMN_BLOCK, min(block * COLUMN_BLOCK + COLUMN_BLOCK, f)
        sums = grad_bias[lo:hi]
        sums[:] = zero
        for r in range(n):
            # 1-D row slices: LLVM vectorises this loop; indexing grad[r, j] it ran scalar
            row, active = grad[r, lo:hi], a[r, lo:hi]
            for j in range(hi - lo):
                d = row[j] if active[j] > zero else row[j] * zero
                row[j] = d
                sums[j] += d


def _relu_backward_bias_rows(grad, a, grad_bias):
    """The serial variant: whole rows, each column's sum in row order as in the blocks (which
    cost a slice per block and row, and only the parallel variant needs them)."""
    zero = np.zeros(1, grad.dtype)[0]
    grad_bias[:] = zero
    for r in range(grad.shape[0]):
        row, active = grad[r], a[r]
        for j in range(row.shape[0]):
            d = row[j] if active[j] > zero else row[j] * zero
            row[j] = d
            grad_bias[j] += d


_RELU_BACKWARD_BIAS = (_jit(_relu_backward_bias_rows), _jit(_relu_backward_bias, parallel=True))


def relu_backward_bias(grad, a, grad_bias):  # noqa: ANN001, ANN201
    """grad (N, F) <- grad * (a > 0) in place (NaN * 0 stays NaN, as NumPy's product) and
    grad_bias (F,) <- its column sums."""
    variant(_RELU_BACKWARD_BIAS, grad.size, kernel_jit.DENSE_PARALLEL_MIN)(grad, a, grad_bias)


def warm_up(dtype: type = np.float32, threads: int | None = None) -> None:
    """Compiles, or loads from Numba's disk cache, every kernel for `dtype`: the serial variants,
    and the parallel ones only where a job's budget of `threads` runs them (kernel_jit.parallel_at;
    None: a worker job's count, threads.default_threads). Below
    PARALLEL_MIN_THREADS they never run, and compiling them cold takes tens of seconds. Workers
    call it at start, so that a first job does not wait for the compiler."""
    from worker.engine import cpu_conv, cpu_gather, cpu_optimizer_steps, cpu_recurrent, spin  # noqa: PLC0415
    from worker.engine import threads as thread_policy  # noqa: PLC0415

    if threads is None:
        threads = thread_policy.default_threads()
    variants = 2 if kernel_jit.parallel_at(threads) else 1
    spin.warm_up()  # the batch split's hand-off, used by conv2d, maxpool2d and the recurrent loops
    cpu_gather.warm_up(dtype, variants)  # the fit loop's batch gather
    cpu_optimizer_steps.warm_up(dtype, variants)
    one, scalar = np.ones(2, dtype), dtype(0.5)
    logits, labels = np.ones((2, 2), dtype), np.zeros(2, np.int64)
    for k in range(variants):
        _SOFTMAX_SHIFT[k](logits, labels, logits.copy())
        _SOFTMAX_FINISH[k](logits.copy(), labels, scalar)
        _BIAS_RELU[k](logits.copy(), one)
        _RELU_BACKWARD_BIAS[k](logits.copy(), logits, one.copy())
    cpu_conv.warm_up(dtype, variants)
    cpu_recurrent.warm_up(dtype, variants)
