"""CPU kernels (Numba) for the time loops of lstm and gru in training: each backward step's gate
gradients in one pass over (N, units) instead of about ten NumPy calls, with no precomputed
derivative arrays (the derivatives come from the saved activations in the same pass); rows run
in parallel when the budget allows (kernel_jit.variant). cpu_recurrent_loops runs them over a
row range lo:hi of the batch (one part of batch_split). Every Numba function the disk-cached
fused loops call lives in this file: Numba's cache sees an edit to the kernel's own file only.

The LSTM's loops are each one call per part (`_lstm_forward`, `_lstm_backward`): the products
by NumPy's own OpenBLAS called from the kernel (cpu_blas), the gate math between them, so the
two parts' threads never take the GIL inside a loop (per step, the NumPy formulation's calls
handed it over about six times each way). The forward's tanh is a rational function that
vectorises (float32; libm's tanhf does not, and NumPy's SIMD tanh is a call per array). Where
NumPy has another BLAS, the step kernel's parallel variant would run, or an array the products
take by pointer is not C-contiguous in the layer's dtype (fused_gemm), the LSTM keeps per-step
kernels and NumPy matmuls (cpu_recurrent_loops, the GRU's loop likewise).

Each equals the array formulation in layers/recurrent.py (still used for CuPy and with
`use_kernels` off) up to rounding order and, in float32, the tanh's few ulp.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from numba import prange, types
from numba.extending import overload, register_jitable

from worker.engine import cpu_blas
from worker.engine.kernel_jit import jit, jit_pair, variant


def _lstm_step(gates, c_prev, tanh_c, dh, dc, dgates):
    """gates (N, 4u) activated i, f, o, g of the step; c_prev, tanh_c (N, u); dh (N, u) dL/dh_t
    in; dc (N, u) dL/dc_t in, dL/dc_{t-1} out; dgates (N, 4u) out: pre-activation gradients.
    Each row through 1-D slices: about 3x faster than 2-D indexing (the inner loop vectorises)."""
    n_, u = dh.shape
    one = np.ones(1, dh.dtype)[0]
    for r in prange(n_):
        gi, gf, go, gg = gates[r, :u], gates[r, u:2 * u], gates[r, 2 * u:3 * u], gates[r, 3 * u:]
        di, df, do, dg = dgates[r, :u], dgates[r, u:2 * u], dgates[r, 2 * u:3 * u], dgates[r, 3 * u:]
        h_row, tc_row, c_row, dc_row = dh[r], tanh_c[r], c_prev[r], dc[r]
        for j in range(u):
            h, tc, i, f, o, g = h_row[j], tc_row[j], gi[j], gf[j], go[j], gg[j]
            cell = dc_row[j] + h * o * (one - tc * tc)
            di[j] = cell * g * ((one - i) * i)
            df[j] = cell * c_row[j] * ((one - f) * f)
            do[j] = h * tc * ((one - o) * o)
            dg[j] = cell * i * (one - g * g)
            dc_row[j] = cell * f


def _gru_step(gates, h_prev, hp_n, dh, d_in, d_hid):
    """gates (N, 3u) r, z, n of the step; h_prev, hp_n (N, u); dh (N, u) dL/dh_t in, its direct
    share of dL/dh_{t-1} (dh * z) out; d_in, d_hid (N, 3u) out: the input- and hidden-side
    pre-activation gradients."""
    n_, u = dh.shape
    one = np.ones(1, dh.dtype)[0]
    for row in prange(n_):
        gr, gz, gn = gates[row, :u], gates[row, u:2 * u], gates[row, 2 * u:]
        in_r, in_z, in_n = d_in[row, :u], d_in[row, u:2 * u], d_in[row, 2 * u:]
        hid_r, hid_z, hid_n = d_hid[row, :u], d_hid[row, u:2 * u], d_hid[row, 2 * u:]
        h_row, prev_row, hp_row = dh[row], h_prev[row], hp_n[row]
        for j in range(u):
            h, r, z, new = h_row[j], gr[j], gz[j], gn[j]
            dn = (one - z) * h * (one - new * new)
            dz = (prev_row[j] - new) * h * ((one - z) * z)
            dr = dn * hp_row[j] * ((one - r) * r)
            in_r[j], in_z[j], in_n[j] = dr, dz, dn
            hid_r[j], hid_z[j], hid_n[j] = dr, dz, dn * r
            h_row[j] = h * z


def _lstm_cell(gates, c_prev, c_next):
    """gates (N, 4u): i, f, o as tanh of half their pre-activations, made sigmoid(pre) =
    (tanh + 1) / 2 in place; g already tanh. c_next = f * c_prev + i * g."""
    n_, u = c_prev.shape
    half = np.full(1, 0.5, gates.dtype)[0]
    for r in prange(n_):
        row, c_row, out = gates[r], c_prev[r], c_next[r]
        for j in range(3 * u):
            row[j] = row[j] * half + half
        for j in range(u):
            out[j] = row[u + j] * c_row[j] + row[j] * row[3 * u + j]


_LSTM_STEP, _GRU_STEP, _LSTM_CELL = jit_pair(_lstm_step), jit_pair(_gru_step), jit_pair(_lstm_cell)


_lstm_step_serial = _LSTM_STEP[0]


def tanh(x):
    """tanh in the fused loops: float64 libm's; float32 the rational approximation below."""
    return np.tanh(x)


# x * P(x*x) / Q(x*x), coefficients of (x*x)**k as float32 literals, and the clamp: derived by
# tanh_fit.fit() (a least-squares fit of the relative error iterated towards equal ripple, float64
# NumPy; its test re-runs the fit and checks these).
TANH_CLAMP = 9.010914
TANH_P = (1.0, 0.13685286, 0.0038750062, 2.8138793e-05, 3.0885364e-08, -1.24105465e-11)
TANH_Q = (1.0, 0.47018617, 0.027270414, 0.00039502888, 1.2963432e-06)


@register_jitable
def _tanh_float32(x):
    """x * P(x*x) / Q(x*x) on x clamped to +-TANH_CLAMP, +-1 from there (float32 tanh rounds to
    +-1 there) and never beyond: a few ulp from tanh and, unlike libm's tanhf, no call, so the loops
    over a row vectorise. Selects written as `bound if x > bound else x` pass a NaN through."""
    limit, one = np.float32(TANH_CLAMP), np.float32(1.0)
    a = limit if x > limit else x
    a = -limit if a < -limit else a
    s = a * a
    p = s * np.float32(TANH_P[5]) + np.float32(TANH_P[4])
    p = s * p + np.float32(TANH_P[3])
    p = s * p + np.float32(TANH_P[2])
    p = s * p + np.float32(TANH_P[1])
    p = s * p + one
    q = s * np.float32(TANH_Q[4]) + np.float32(TANH_Q[3])
    q = s * q + np.float32(TANH_Q[2])
    q = s * q + np.float32(TANH_Q[1])
    q = s * q + one
    r = a * p / q
    r = one if (r > one) | (x >= limit) else r
    return -one if (r < -one) | (x <= -limit) else r


@overload(tanh)
def _tanh_overload(x):
    if x == types.float32:
        return lambda x: _tanh_float32(x)
    return lambda x: np.tanh(x)


# CBLAS_ORDER / CBLAS_TRANSPOSE: here, not cpu_blas's, so that a disk-cached kernel depends on this file alone
ROW_MAJOR, NO_TRANS = 101, 111


@register_jitable
def _leading(x):
    """The leading dimension cblas takes for the 2-D row-major x, which must have contiguous rows.
    Not strides[0] alone: the stride of a dimension of length 1 is arbitrary (NumPy calls a (1, 4)
    array with strides (4, 4) contiguous: np.ascontiguousarray(W.T) of a (4, 1) W), and OpenBLAS
    rejects a leading dimension below the row length, leaving the output as it was."""
    rows, cols = x.shape
    if cols > 1 and x.strides[1] != x.itemsize:
        raise ValueError("_matmul needs contiguous rows")
    if rows <= 1 or cols == 0:
        return max(1, cols)
    if x.strides[0] % x.itemsize or x.strides[0] < cols * x.itemsize:
        raise ValueError("_matmul needs rows that do not overlap")
    return x.strides[0] // x.itemsize


@register_jitable
def _matmul(gemm, a, b, c, beta):
    """c = a @ b + beta * c by cblas gemm (cpu_blas.gemm, of the arrays' dtype) on 2-D arrays with
    contiguous rows."""
    gemm(ROW_MAJOR, NO_TRANS, NO_TRANS, a.shape[0], b.shape[1], a.shape[1], 1.0,
         a.ctypes.data, _leading(a), b.ctypes.data, _leading(b), beta, c.ctypes.data, _leading(c))


# M*N*K up to which OpenBLAS's SkylakeX sgemm runs its small kernels (no packing): cpu_blas.SMALL_GEMM,
# a literal here as the disk-cached loops read it (see ROW_MAJOR)
SMALL_GEMM = 1_000_000
K_CHUNKS = 8


@register_jitable
def _matmul_chunked(gemm, a, b, c, beta, chunked):
    """_matmul, with `chunked` (OpenBLAS on one thread) as K_CHUNKS products over slices of the
    inner dimension where each is then small enough for OpenBLAS's small-matrix kernels and the
    whole is not: a step's (32, 128) @ (128, 512) and (32, 512) @ (512, 128) products repacked B
    (the whole W) on every call. The small kernels run on one thread: with more, one product."""
    m, k, n = a.shape[0], a.shape[1], b.shape[1]
    small = m * n * k > SMALL_GEMM and m * n * (k // K_CHUNKS) <= SMALL_GEMM
    chunks = K_CHUNKS if chunked and small else 1
    for part in range(chunks):
        lo, hi = k * part // chunks, k * (part + 1) // chunks
        _matmul(gemm, a[:, lo:hi], b[lo:hi], c, beta if part == 0 else 1.0)


def _lstm_forward(gemm, chunked, proj, bias, w_hh_t, hs, cs, tanh_c, lo, hi):
    """The LSTM's fused time loop (LSTM._run) over batch rows lo:hi in one call: proj (T, N, 4u) the input
    projections without their bias (4u,), sigmoid rows of both halved (layers/gated.py), becomes
    the activated gates i, f, o, g; w_hh_t (u, 4u) the halved W_hh^T; hs, cs (T+1, N, u) with
    step 0 zero and tanh_c (T, N, u) filled; chunked: see _matmul_chunked. Each step: the gemm
    adding h_{t-1} @ W^T into the gates, then one pass per row."""
    u = hs.shape[2]
    half = np.full(1, 0.5, proj.dtype)[0]
    bi, bf, bo, bg = bias[:u], bias[u:2 * u], bias[2 * u:3 * u], bias[3 * u:]
    for t in range(proj.shape[0]):
        gates = proj[t, lo:hi]
        if t:
            _matmul_chunked(gemm, hs[t, lo:hi], w_hh_t, gates, 1.0, chunked)
        c_prev, c_next, tc, h = cs[t, lo:hi], cs[t + 1, lo:hi], tanh_c[t, lo:hi], hs[t + 1, lo:hi]
        for r in range(hi - lo):
            gi, gf, go, gg = gates[r, :u], gates[r, u:2 * u], gates[r, 2 * u:3 * u], gates[r, 3 * u:]
            cp_row, cn_row, tc_row, h_row = c_prev[r], c_next[r], tc[r], h[r]
            for j in range(u):
                i, f = tanh(gi[j] + bi[j]) * half + half, tanh(gf[j] + bf[j]) * half + half
                o, g = tanh(go[j] + bo[j]) * half + half, tanh(gg[j] + bg[j])
                gi[j], gf[j], go[j], gg[j] = i, f, o, g
                c = f * cp_row[j] + i * g
                cn_row[j] = c
                tc_row[j] = tanh(c)
                h_row[j] = o * tc_row[j]


def _lstm_backward(gemm, chunked, gates, cs, tanh_c, upstream, every_step, w_hh, dgates, dh, dc, lo, hi):
    """cpu_recurrent_loops.lstm_bptt's whole loop over batch rows lo:hi in one call: upstream
    (N, T, u) dL/dh of every step (every_step) or (N, 1, u) of the last; dh, dc (hi-lo, u) zeroed
    state; dgates (T, N, 4u) filled. Each step: the upstream rows added, _lstm_step, one gemm for
    dL/dh_{t-1} (none at t = 0: h_{-1} is no parameter's input)."""
    last = gates.shape[0] - 1
    for t in range(last, -1, -1):
        if every_step or t == last:
            for r in range(hi - lo):
                dh[r] += upstream[lo + r, t if every_step else 0]
        _lstm_step_serial(gates[t, lo:hi], cs[t, lo:hi], tanh_c[t, lo:hi], dh, dc, dgates[t, lo:hi])
        if t:
            _matmul_chunked(gemm, dgates[t, lo:hi], w_hh, dh, 0.0, chunked)


_LSTM_FORWARD, _LSTM_BACKWARD = jit(_lstm_forward, error_model="numpy"), jit(_lstm_backward)


def fused_gemm(dtype: Any, size: int, *operands: np.ndarray) -> Any:
    """cpu_blas.gemm(dtype) where a fused loop (_lstm_forward, _lstm_backward) runs a part of
    `size` gate values per step, else None: NumPy uses another BLAS, the step kernel's parallel
    variant would run (kernel_jit.variant; the fused loops' gate math is serial), or one of the
    arrays its products take by pointer (`operands`) is not a C-contiguous array of `dtype` (the
    gemm reads raw memory as that dtype). Called before the batch split, in the caller's thread."""
    if variant(_LSTM_STEP, size) is not _LSTM_STEP[0]:
        return None
    if not takes_by_pointer(dtype, *operands):
        return None
    return cpu_blas.gemm(np.dtype(dtype))


def takes_by_pointer(dtype: Any, *operands: np.ndarray) -> bool:
    """Whether the gemm of fused_gemm(dtype, ...) can read each of `operands` by raw pointer:
    C-contiguous arrays of `dtype`."""
    dtype = np.dtype(dtype)
    return all(array.dtype == dtype and array.flags.c_contiguous for array in operands)


def chunked() -> bool:
    """The fused loops' `chunked` now (_matmul_chunked): NumPy's OpenBLAS on one thread."""
    return cpu_blas.threads() == 1


def warm_up(dtype: type = np.float32, variants: int = 2) -> None:
    """Compiles or loads the serial (and with variants=2 the parallel) variant of each kernel
    for `dtype` (see cpu_kernels.warm_up)."""
    four, one = np.full((1, 4), 0.5, dtype), np.full((1, 1), 0.5, dtype)
    for k in range(variants):
        _LSTM_STEP[k](four, one, one, one.copy(), one.copy(), four.copy())
        _GRU_STEP[k](four[:, :3], one, one, one.copy(), four[:, :3].copy(), four[:, :3].copy())
        _LSTM_CELL[k](four.copy(), one, one.copy())
    gemm = cpu_blas.gemm(dtype)
    if gemm is not None:
        hs, dgates = np.zeros((2, 1, 1), dtype), np.zeros((1, 1, 4), dtype)
        _LSTM_FORWARD(gemm, True, four[None].copy(), four[0], four, hs, hs.copy(), hs[1:].copy(), 0, 1)
        _LSTM_BACKWARD(gemm, True, four[None], hs, hs[1:], hs, True, four.T.copy(), dgates, one.copy(), one.copy(),
                       0, 1)
