"""Fused CPU loops (Numba) for the per-step work NumPy would spread over many passes.

One optimizer step touches every parameter, its gradient and its state: in NumPy that is four
to ten full passes over memory plus the gradient-norm dots; here it is one pass that also sums
each parameter's squared gradient. Softmax cross-entropy on (N, K) logits is ten small NumPy
calls; here it is one loop that also counts the correct predictions. A ReLU dense layer adds its
bias and applies ReLU in one pass, and masks its gradient while summing the bias gradient in
another. Results equal the NumPy formulations (`optimizers.py`, `losses.py`, `activations.py`,
still used on CuPy) up to rounding order: sums are reassociated for SIMD, multiply-adds may fuse.

Compiled on first use per dtype and cached on disk (Numba's `cache=True`; without a writable
cache location, compiled in each process instead). Training only: prediction, and so the API
process, never loads Numba. No `nnan`/`ninf` fast-math flags: a NaN or an infinity must still
reach the loss, where the fit loop reports divergence.
"""
from __future__ import annotations

import math

import numba
import numpy as np

_FAST = {"reassoc", "contract", "nsz", "arcp"}


def _jit(function):  # noqa: ANN001, ANN202
    try:
        return numba.njit(cache=True, nogil=True, fastmath=_FAST)(function)
    except RuntimeError:  # no writable cache location (read-only install, no home): compile per process
        return numba.njit(cache=False, nogil=True, fastmath=_FAST)(function)


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


@_jit
def sgd_step(p, g, buf, lr, mu, nesterov, bounds, squares):
    """p, g, buf (P,) flat; bounds (n+1,) each parameter's [start, end); squares (n,) out."""
    for s in range(bounds.shape[0] - 1):
        lo, hi = bounds[s], bounds[s + 1]
        squares[s] = _sgd_segment(p[lo:hi], g[lo:hi], buf[lo:hi], lr, mu, nesterov)


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


@_jit
def adam_step(p, g, m, v, decay, b1, b2, step_size, inv_sqrt_bias2, eps, bounds, squares):
    """torch.optim.Adam/AdamW: decay = 1 - lr * weight_decay (1 for Adam), b1 = (beta1,
    1 - beta1), b2 likewise, step_size = lr / (1 - beta1**t), inv_sqrt_bias2 =
    1 / sqrt(1 - beta2**t); every scalar and pair in p's dtype (no float64 promotion)."""
    for s in range(bounds.shape[0] - 1):
        lo, hi = bounds[s], bounds[s + 1]
        squares[s] = _adam_segment(p[lo:hi], g[lo:hi], m[lo:hi], v[lo:hi], decay, b1, b2, step_size,
                                   inv_sqrt_bias2, eps)


@_jit
def softmax_cross_entropy(logits, y, grad, inv_n):
    """logits (N, K), y (N,) int class indices, grad (N, K) out = (softmax - onehot) / N;
    inv_n = 1/N in the logits' dtype. Returns (mean loss as float64, rows whose first largest
    logit is the target, as np.argmax counts them)."""
    n, k = logits.shape
    total, correct = 0.0, 0
    for r in range(n):
        row, out, target = logits[r], grad[r], y[r]
        if target < 0 or target >= k:  # Numba does not check bounds: never write outside the row
            raise IndexError("a class label is outside the output layer's units")
        top, arg = row[0], 0
        for j in range(1, k):
            if row[j] > top:
                top, arg = row[j], j
        sum_exp = np.zeros(1, logits.dtype)[0]
        for j in range(k):
            e = math.exp(row[j] - top)
            out[j] = e
            sum_exp += e
        total += math.log(sum_exp) - (row[target] - top)
        scale = inv_n / sum_exp
        for j in range(k):
            out[j] *= scale
        out[target] -= inv_n
        correct += arg == target
    return total / n, correct


@_jit
def bias_relu(z, bias):
    """z (N, F) <- max(z + bias, 0) in place; NaN stays NaN, as with np.maximum."""
    zero = np.zeros(1, z.dtype)[0]  # typed: a bare 0 would promote the loop to float64
    for r in range(z.shape[0]):
        row = z[r]
        for j in range(row.shape[0]):
            v = row[j] + bias[j]
            row[j] = zero if v < zero else v


@_jit
def relu_backward_bias(grad, a, grad_bias):
    """grad (N, F) <- grad * (a > 0) in place (NaN * 0 stays NaN, as NumPy's product) and
    grad_bias (F,) <- its column sums."""
    zero = np.zeros(1, grad.dtype)[0]
    grad_bias[:] = zero
    for r in range(grad.shape[0]):
        g, act = grad[r], a[r]
        for j in range(g.shape[0]):
            d = g[j] if act[j] > zero else g[j] * zero
            g[j] = d
            grad_bias[j] += d


def warm_up(dtype: type = np.float32) -> None:
    """Compiles, or loads from Numba's disk cache, every kernel for `dtype` (workers call it at
    start, so that a first job does not wait seconds for the compiler)."""
    one, bounds, squares = np.ones(2, dtype), np.array([0, 2]), np.empty(1)
    pair, scalar = np.array([0.9, 0.1], dtype), dtype(0.5)
    sgd_step(one.copy(), one, one.copy(), scalar, scalar, False, bounds, squares)
    adam_step(one.copy(), one, one.copy(), one.copy(), scalar, pair, pair, scalar, scalar, scalar, bounds, squares)
    logits = np.ones((2, 2), dtype)
    softmax_cross_entropy(logits, np.zeros(2, np.int64), logits.copy(), scalar)
    bias_relu(logits.copy(), one)
    relu_backward_bias(logits.copy(), logits, one.copy())
