"""CPU kernels (Numba) for conv2d and maxpool2d in training: each pass over the batch in one loop,
parallel over samples (or filters) when the budget allows (kernel_jit.variant).

conv2d keeps the column matrix as (C*kh*kw, N, Ho, Wo), whose column blocks of G equal groups
of samples are the operands of one stacked product (conv.py's sample_groups):
`im2col` reads the input (N, C, H, W) directly, zero padding included (no padded copy);
`bias_act` moves the products' (G, F, N/G, Ho*Wo) result to (N, F, Ho*Wo) while adding the bias
and applying ReLU (one pass instead of a transpose, an add and a maximum); `grad_to_filters` is
the reverse for backward: the ReLU mask, the move back to (F, N*Ho*Wo) for the weight product,
and the bias gradient, in one pass; `col2im` sums the columns' gradients, (G, C*kh*kw, N/G, Ho,
Wo), back into dx, group by group, reading each in memory order.
maxpool2d records each window's argmax (int32) in forward, so backward is one scatter; 2x2
windows at stride 2, the common case, run unrolled on row views (faster than the general loop,
which serves every other window per plane).

Each equals the NumPy formulation of the layer it serves (im2col.py, conv.py, pooling.py), NaN
and infinity included: a window holding a NaN pools to NaN and passes no gradient, and a
non-finite incoming gradient reaches every input of its window as NumPy's `grad * mask` does.
"""
from __future__ import annotations

import numpy as np
from numba import prange

from worker.engine.kernel_jit import jit, jit_pair, variant


def _im2col(x, kh, kw, sh, sw, top, left, cols):
    n_, c_, h_, w_ = x.shape
    ho, wo = cols.shape[2], cols.shape[3]
    zero = np.zeros(1, cols.dtype)[0]
    for n in prange(n_):
        for c in range(c_):
            for i in range(kh):
                for j in range(kw):
                    k = (c * kh + i) * kw + j
                    for oh in range(ho):
                        r = oh * sh + i - top
                        inside_rows = 0 <= r < h_
                        for ow in range(wo):
                            col = ow * sw + j - left
                            inside = inside_rows and 0 <= col < w_
                            cols[k, n, oh, ow] = x[n, c, r, col] if inside else zero


def _col2im(dcols, kh, kw, sh, sw, top, left, dx):
    n_, c_, h_, w_ = dx.shape
    groups, per_group, ho, wo = dcols.shape[0], dcols.shape[2], dcols.shape[3], dcols.shape[4]
    zero = np.zeros(1, dx.dtype)[0]
    for g in prange(groups):  # a group's columns read in memory order: offset, then sample
        dx[g * per_group:(g + 1) * per_group] = zero
        for c in range(c_):
            for i in range(kh):  # every element gets its windows' shares in (i, j) order, as col2im adds them
                for j in range(kw):
                    k = (c * kh + i) * kw + j
                    shift = j - left  # [lo, hi): the columns ow whose input ow * sw + shift is inside
                    lo = min(wo, max(0, (sw - 1 - shift) // sw))
                    hi = max(lo, min(wo, (w_ - shift + sw - 1) // sw))
                    for s in range(per_group):
                        for oh in range(ho):
                            r = oh * sh + i - top
                            if r < 0 or r >= h_:
                                continue
                            row, shares = dx[g * per_group + s, c, r], dcols[g, k, s, oh]
                            if sw == 1:  # no bounds test inside, contiguous: vectorizes
                                for ow in range(lo, hi):
                                    row[ow + shift] += shares[ow]
                            else:
                                for ow in range(lo, hi):
                                    row[ow * sw + shift] += shares[ow]


def _bias_act(gemm, bias, relu, z):
    g_, f_, s_, p_ = gemm.shape
    zero = np.zeros(1, z.dtype)[0]
    for n in prange(g_ * s_):
        g, s = n // s_, n % s_
        for f in range(f_):
            b = bias[f]
            for p in range(p_):
                v = gemm[g, f, s, p] + b
                z[g, s, f, p] = zero if relu and v < zero else v


def _grad_to_filters(grad, a, relu, dz_cm, grad_bias):
    n_, f_, p_ = grad.shape
    zero = np.zeros(1, grad.dtype)[0]
    for f in prange(f_):
        total = 0.0
        for n in range(n_):
            for p in range(p_):
                d = grad[n, f, p]
                if relu and not a[n, f, p] > zero:
                    d = d * zero  # NaN * 0 stays NaN, as NumPy's masked product
                dz_cm[f, n, p] = d
                total += d
        grad_bias[f] = total


def _pool_plane(x, ph, pw, sh, sw, out, arg):
    """One (H, W) plane, any window: strict compares (the first maximum wins; a NaN sticks)."""
    w_ = x.shape[1]
    for oh in range(out.shape[0]):
        for ow in range(out.shape[1]):
            r0, c0 = oh * sh, ow * sw
            best, at = x[r0, c0], r0 * w_ + c0
            for i in range(ph):
                for j in range(pw):
                    v = x[r0 + i, c0 + j]
                    if v > best or v != v:
                        best, at = v, (r0 + i) * w_ + c0 + j
            out[oh, ow] = best
            arg[oh, ow] = at if best == best else -1


def _maxpool(x, ph, pw, sh, sw, out, arg):
    n_, c_, _, w_ = x.shape
    for n in prange(n_):
        for c in range(c_):
            if not ph == pw == sh == sw == 2:
                _POOL_PLANE(x[n, c], ph, pw, sh, sw, out[n, c], arg[n, c])
                continue
            for oh in range(out.shape[2]):  # the common window, inline on row views (module docstring)
                top, bottom = x[n, c, 2 * oh], x[n, c, 2 * oh + 1]
                pooled, where, first = out[n, c, oh], arg[n, c, oh], 2 * oh * w_
                for ow in range(out.shape[3]):
                    c0 = 2 * ow
                    a, b, d, e = top[c0], top[c0 + 1], bottom[c0], bottom[c0 + 1]
                    ab = b if b > a else a  # strict: the first of equal values (the sign of a zero too)
                    de = e if e > d else d
                    best = de if de > ab else ab
                    nan = (a != a) | (b != b) | (d != d) | (e != e)
                    # the first of the four equal to the maximum, as arithmetic: selects vectorize, branches did not
                    k = np.int32(a != best) * (1 + np.int32(b != best) * (w_ - 1 + np.int32(d != best)))
                    pooled[ow] = a + b + d + e if nan else best
                    where[ow] = -1 if nan else first + c0 + k


def _unpool_plane(grad, arg, ph, pw, sh, sw, dx):
    """One plane, any windows (overlapping ones too): each input's shares summed in the array
    formulation's order (window offset (i, j)); inf or NaN (g * 0 = NaN) reaches the whole window."""
    w_, wo = dx.shape[1], grad.shape[1]
    zero = np.zeros(1, dx.dtype)[0]
    dx[:] = zero
    plane, g_plane, a_plane = dx.reshape(-1), grad.reshape(-1), arg.reshape(-1)
    for k in range(g_plane.size - 1, -1, -1):
        g, at = g_plane[k], a_plane[k]
        if g - g == zero:  # finite: only the argmax receives it
            if at >= 0:
                plane[at] += g
            continue
        oh, ow = k // wo, k % wo
        for i in range(ph):
            for j in range(pw):
                pos = (oh * sh + i) * w_ + ow * sw + j
                plane[pos] += g if pos == at else g * zero


def _maxpool_backward(grad, arg, ph, pw, sh, sw, dx):
    n_, c_, h_, w_ = dx.shape
    ho, wo = grad.shape[2], grad.shape[3]
    zero = np.zeros(1, dx.dtype)[0]
    for n in prange(n_):
        for c in range(c_):
            if not ph == pw == sh == sw == 2:
                _UNPOOL_PLANE(grad[n, c], arg[n, c], ph, pw, sh, sw, dx[n, c])
                continue
            plane = dx[n, c]  # disjoint 2x2 windows: zeros, then each window's gradient at its argmax
            plane[:] = zero
            flat = plane.reshape(-1)
            for oh in range(ho):
                grads, where = grad[n, c, oh], arg[n, c, oh]
                for ow in range(wo):
                    g, at = grads[ow], where[ow]
                    if g - g != zero:  # inf or NaN: g * 0 (NaN) to the whole window, as the array formulation
                        plane[2 * oh:2 * oh + 2, 2 * ow:2 * ow + 2] = g * zero
                    if at >= 0:
                        flat[at] = g


_POOL_PLANE, _UNPOOL_PLANE = jit(_pool_plane), jit(_unpool_plane)
_IM2COL, _COL2IM = jit_pair(_im2col), jit_pair(_col2im)
_BIAS_ACT, _GRAD_TO_FILTERS = jit_pair(_bias_act), jit_pair(_grad_to_filters)
_MAXPOOL, _MAXPOOL_BACKWARD = jit_pair(_maxpool), jit_pair(_maxpool_backward)


def im2col(x, kernel, stride, pads, cols):  # noqa: ANN001, ANN201
    """x (N, C, H, W) -> cols (C*kh*kw, N, Ho, Wo), given; pads (top, bottom, left, right)."""
    variant(_IM2COL, cols.size)(x, *kernel, *stride, pads[0], pads[2], cols)
    return cols


def col2im(dcols, kernel, stride, pads, dx):  # noqa: ANN001, ANN201
    """dcols (G, C*kh*kw, N/G, Ho, Wo), the columns of G equal groups of samples in order, -> dx
    (N, C, H, W), given: every window's share summed back. The parallel variant runs the groups
    at once."""
    variant(_COL2IM, dcols.size)(dcols, *kernel, *stride, pads[0], pads[2], dx)
    return dx


def bias_act(gemm, bias, relu, z):  # noqa: ANN001, ANN201
    """gemm (G, F, N/G, P), G equal groups of samples in order, -> z (G, N/G, F, P) (z (N, F, P)
    reshaped) = gemm + bias, through ReLU when `relu`."""
    variant(_BIAS_ACT, z.size)(gemm, bias, relu, z)
    return z


def grad_to_filters(grad, a, relu, dz_cm, grad_bias):  # noqa: ANN001, ANN201
    """grad (N, F, P) (masked by a > 0 when `relu`) -> dz_cm (F, N, P), and grad_bias (F,) its
    sums (accumulated in float64)."""
    variant(_GRAD_TO_FILTERS, grad.size)(grad, a, relu, dz_cm, grad_bias)
    return dz_cm


def maxpool(x, pool, stride, out, arg):  # noqa: ANN001, ANN201
    """out (N, C, Ho, Wo) the window maxima of x, arg (int32) the flat (h * W + w) index of each,
    -1 for a window holding a NaN (its maximum is NaN)."""
    variant(_MAXPOOL, x.size)(x, *pool, *stride, out, arg)
    return out


def maxpool_backward(grad, arg, pool, stride, dx):  # noqa: ANN001, ANN201
    variant(_MAXPOOL_BACKWARD, dx.size)(grad, arg, *pool, *stride, dx)
    return dx


def warm_up(dtype: type = np.float32, variants: int = 2) -> None:
    """Compiles or loads the serial (and with variants=2 the parallel) variant of every kernel
    for `dtype` (see cpu_kernels.warm_up)."""
    x = np.ones((1, 1, 2, 2), dtype)
    cols, dx = np.empty((1, 1, 2, 2), dtype), np.empty((1, 1, 2, 2), dtype)
    one, arg = np.zeros(1, dtype), np.empty((1, 1, 1, 1), np.int32)
    for k in range(variants):
        _IM2COL[k](x, 1, 1, 1, 1, 0, 0, cols)
        _COL2IM[k](cols.reshape(1, 1, 1, 2, 2), 1, 1, 1, 1, 0, 0, dx)
        _BIAS_ACT[k](x.reshape(1, 1, 1, 4), one, True, dx.reshape(1, 1, 1, 4))
        _GRAD_TO_FILTERS[k](x.reshape(1, 1, 4), x.reshape(1, 1, 4), True, dx.reshape(1, 1, 4), one)
        _MAXPOOL[k](x, 2, 2, 2, 2, np.empty((1, 1, 1, 1), dtype), arg)
        _MAXPOOL_BACKWARD[k](np.ones((1, 1, 1, 1), dtype), arg, 2, 2, 2, 2, dx)
