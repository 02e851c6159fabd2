"""CPU kernels (Numba) for the time loops of lstm and gru in training: each backward step's gate
gradients in one pass over (N, units) instead of about ten NumPy calls, with no precomputed
derivative arrays (the derivatives come from the saved activations in the same pass); rows run
in parallel when the budget allows (kernel_jit.variant). The recurrent products stay NumPy
matmuls. In the forward loop only the LSTM's cell update is a kernel (`lstm_cell_kernel`): the tanh
stays NumPy's vectorised loop, which Numba's scalar libm calls are several times slower than.
The loops run over a row range lo:hi of the batch (one part of batch_split), with their dh/dc
state in the layer's scratch arrays.

Each equals the array formulation in layers/recurrent.py (still used for CuPy and with
`use_kernels` off) up to rounding order.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from numba import prange

from worker.engine.kernel_jit import jit_pair, variant


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


def lstm_cell_kernel(size: int) -> Any:
    """The lstm_cell kernel, kernel(gates, c_prev, c_next), for calls over `size` gate values
    (picked once per time loop, not per step)."""
    return variant(_LSTM_CELL, size)


def _state(layer: Any, part: int, rows: int, names: str) -> list[np.ndarray]:
    """The part's (rows, units) loop state arrays, zeroed."""
    arrays = [layer.scratch(f"{name}{part}", (rows, layer.units)) for name in names.split()]
    for array in arrays:
        array[...] = 0
    return arrays


def lstm_bptt(layer: Any, grad_out: np.ndarray, dgates: np.ndarray, w_hh: np.ndarray, lo: int, hi: int,
              part: int) -> None:
    """The LSTM's backward time loop over batch rows lo:hi (layer: its saved forward state; w_hh:
    W_hh in loop gate order, reordered once for all parts) -> dgates[:, lo:hi] (T, rows, 4u)."""
    gates, cs, tanh_c = layer._gates[:, lo:hi], layer._cs[:, lo:hi], layer._tanh_c[:, lo:hi]
    dgates = dgates[:, lo:hi]
    dh, dc = _state(layer, part, hi - lo, "dh dc")
    kernel = variant(_LSTM_STEP, dgates[0].size)
    for t in range(gates.shape[0] - 1, -1, -1):
        layer._add_upstream(dh, grad_out, t, lo)
        kernel(gates[t], cs[t], tanh_c[t], dh, dc, dgates[t])
        np.matmul(dgates[t], w_hh, out=dh)


def gru_bptt(layer: Any, grad_out: np.ndarray, d_in: np.ndarray, d_hid: np.ndarray, lo: int, hi: int,
             part: int) -> None:
    """The GRU's backward time loop over batch rows lo:hi -> d_in, d_hid[:, lo:hi] (T, rows, 3u)."""
    gates, hs, hp_n = layer._gates[:, lo:hi], layer._hs[:, lo:hi], layer._hp_n[:, lo:hi]
    w_hh, d_in, d_hid = layer._p("weight_hh_l0"), d_in[:, lo:hi], d_hid[:, lo:hi]
    (dh,), through = _state(layer, part, hi - lo, "dh"), layer.scratch(f"through{part}", (hi - lo, layer.units))
    kernel = variant(_GRU_STEP, d_in[0].size)
    for t in range(gates.shape[0] - 1, -1, -1):
        layer._add_upstream(dh, grad_out, t, lo)
        kernel(gates[t], hs[t], hp_n[t], dh, d_in[t], d_hid[t])
        dh += np.matmul(d_hid[t], w_hh, out=through)


def warm_up(dtype: type = np.float32, variants: int = 2) -> None:
    """Compiles or loads the serial (and with variants=2 the parallel) variant of each kernel
    for `dtype` (see cpu_kernels.warm_up)."""
    four, one = np.full((1, 4), 0.5, dtype), np.full((1, 1), 0.5, dtype)
    for k in range(variants):
        _LSTM_STEP[k](four, one, one, one.copy(), one.copy(), four.copy())
        _GRU_STEP[k](four[:, :3], one, one, one.copy(), four[:, :3].copy(), four[:, :3].copy())
        _LSTM_CELL[k](four.copy(), one, one.copy())
