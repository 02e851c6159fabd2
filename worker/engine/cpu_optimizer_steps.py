"""The optimizer step on the CPU: one fused Numba pass over the flat parameters.

One step touches every parameter, its gradient and its state: in NumPy (`optimizers.py`, still
used on CuPy) that is four to ten full passes over memory plus the gradient-norm dots; here it is
one pass that also sums each parameter's squared gradient. Results equal the NumPy formulation up
to rounding order: sums are reassociated for SIMD, multiply-adds may fuse.

Each step runs a serial or a parallel compilation (kernel_jit.variant_parts, by size): the parallel
one cuts the flat buffer into one equal part per thread (each parameter's squared-norm sum then
adds its pieces' partial sums, in float64). The step's size is every element it streams
(parameters times 3 for SGD with momentum, 4 for Adam), so bench_mlp's 235,146 parameters take
the parallel step from PARALLEL_MIN_THREADS threads. On 2 threads it took longer: 664-779 µs per
step against 341-360 serial (`python -m bench.profile_mlp_step --rows 60000 --threads 2 --batch
1024 --kernels parallel` / `serial`, 2026-11-30 14:40 UTC, two runs each). Its gain from 4
threads is not measured yet. Compiled and cached as cpu_kernels' loops (no fast-math NaN/inf
flags either: a NaN must still reach the loss).
"""
from __future__ import annotations

import math

import numba
import numpy as np
from numba import prange

from worker.engine import kernel_jit
from worker.engine.kernel_jit import jit as _jit
from worker.engine.kernel_jit import jit_pair

__all__ = ["adam_step", "part_sums", "sgd_step", "warm_up"]


@_jit
def _sgd_segment(p, g, buf, lr, mu, nesterov):
    """One parameter's PyTorch SGD update in one pass; returns sum(g**2) (g before the step)."""
    acc = np.zeros(1, g.dtype)[0]
    if mu == 0:
        for i in range(p.shape[0]):
            gi = g[i]
            acc += gi * gi
            p[i] -= lr * gi
    elif nesterov:
        for i in range(p.shape[0]):
            gi = g[i]
            acc += gi * gi
            b = mu * buf[i] + gi
            buf[i] = b
            p[i] -= lr * (gi + mu * b)
    else:
        for i in range(p.shape[0]):
            gi = g[i]
            acc += gi * gi
            b = mu * buf[i] + gi
            buf[i] = b
            p[i] -= lr * b
    return acc


def _part_range(start, end, part, parts):
    """[lo, hi): part `part` of [start, end) cut into `parts` contiguous pieces of equal size."""
    size = end - start
    return start + size * part // parts, start + size * (part + 1) // parts


_PART_RANGE = _jit(_part_range)


@_jit
def _add_parts(partial, squares):
    """squares (n,) <- partial (parts, n) summed over the parts, in part order."""
    squares[:] = 0.0
    for part in range(partial.shape[0]):
        for s in range(partial.shape[1]):
            squares[s] += partial[part, s]


def _sgd(p, g, buf, lr, mu, nesterov, bounds, partial, squares):
    """The flat range bounds[0]:bounds[-1] cut into one equal part per row of partial (one per
    thread in the parallel variant, 1 in the serial one), each updating the pieces of the
    parameters it holds; partial (parts, n) <- each part's sum(g**2) per parameter."""
    n, parts = bounds.shape[0] - 1, partial.shape[0]
    for part in prange(parts):
        lo, hi = _PART_RANGE(bounds[0], bounds[n], part, parts)
        for s in range(n):
            a, b = max(bounds[s], lo), min(bounds[s + 1], hi)
            partial[part, s] = _sgd_segment(p[a:b], g[a:b], buf[a:b], lr, mu, nesterov) if a < b else 0.0
    _add_parts(partial, squares)


_SGD = jit_pair(_sgd)


def part_sums(n_params: int) -> np.ndarray:
    """Scratch for sgd_step and adam_step, kept by their caller (one per optimizer): a float64 row
    of per-parameter squared sums for each part a step can run in (at most Numba's pool)."""
    return np.empty((max(1, numba.config.NUMBA_NUM_THREADS), n_params))


def sgd_step(p, g, buf, lr, mu, nesterov, bounds, squares, sums):  # noqa: ANN001, ANN201
    """p, g, buf (P,) flat; bounds (n+1,) each parameter's [start, end); squares (n,) out; sums:
    part_sums(n)."""
    touched = p.shape[0] * (3 if mu else 2)  # the pass reads and writes p and buf, reads g
    _run_step(_SGD, touched, p, g, buf, lr, mu, nesterov, bounds, sums, squares)


def _run_step(pair, touched, *args):  # noqa: ANN001, ANN202
    """The serial step (one part) or the parallel one (a part per thread), by size; args are the
    kernel's, ending (..., bounds, part sums, squares)."""
    *head, bounds, sums, squares = args
    n = bounds.shape[0] - 1  # the parameters the kernels loop over; Numba does not check bounds
    if not n == squares.shape[0] == sums.shape[1]:
        raise ValueError(f"bounds for {n} parameters, squares for {squares.shape[0]}, part sums for {sums.shape[1]}")
    kernel, parts = kernel_jit.variant_parts(pair, touched)
    kernel(*head, bounds, sums[:parts], squares)


@_jit
def _adam_segment(p, g, m, v, decay, b1, b2, step_size, inv_sqrt_bias2, eps):
    acc = np.zeros(1, g.dtype)[0]
    for i in range(p.shape[0]):
        gi = g[i]
        acc += gi * gi
        mi = b1[0] * m[i] + b1[1] * gi
        vi = b2[0] * v[i] + b2[1] * (gi * gi)
        m[i] = mi
        v[i] = vi
        p[i] = p[i] * decay - step_size * mi / (math.sqrt(vi) * inv_sqrt_bias2 + eps)
    return acc


def _adam(p, g, m, v, decay, b1, b2, step_size, inv_sqrt_bias2, eps, bounds, partial, squares):
    """Adam's step cut in parts as _sgd."""
    n, parts = bounds.shape[0] - 1, partial.shape[0]
    for part in prange(parts):
        lo, hi = _PART_RANGE(bounds[0], bounds[n], part, parts)
        for s in range(n):
            a, b = max(bounds[s], lo), min(bounds[s + 1], hi)
            partial[part, s] = _adam_segment(p[a:b], g[a:b], m[a:b], v[a:b], decay, b1, b2, step_size,
                                             inv_sqrt_bias2, eps) if a < b else 0.0
    _add_parts(partial, squares)


_ADAM = jit_pair(_adam)


def adam_step(p, g, m, v, decay, b1, b2, step_size, inv_sqrt_bias2, eps, bounds, squares, sums):  # noqa: ANN001, ANN201
    """torch.optim.Adam/AdamW: decay = 1 - lr * weight_decay (1 for Adam), b1 = (beta1,
    1 - beta1), b2 likewise, step_size = lr / (1 - beta1**t), inv_sqrt_bias2 =
    1 / sqrt(1 - beta2**t); every scalar and pair in p's dtype (no float64 promotion)."""
    _run_step(_ADAM, p.shape[0] * 4, p, g, m, v, decay, b1, b2, step_size, inv_sqrt_bias2, eps, bounds, sums,
              squares)  # four arrays touched


def warm_up(dtype: type = np.float32, variants: int = 2) -> None:
    """Compiles or loads the serial (and with variants=2 the parallel) step of SGD and Adam for
    `dtype` (see cpu_kernels.warm_up)."""
    one, bounds, squares, sums = np.ones(2, dtype), np.array([0, 2]), np.empty(1), np.empty((2, 1))
    pair, scalar = np.array([0.9, 0.1], dtype), dtype(0.5)
    for k in range(variants):
        _SGD[k](one.copy(), one, one.copy(), scalar, scalar, False, bounds, sums, squares)
        _ADAM[k](one.copy(), one, one.copy(), one.copy(), scalar, pair, pair, scalar, scalar, scalar, bounds, sums,
                 squares)
