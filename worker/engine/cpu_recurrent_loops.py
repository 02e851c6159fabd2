"""The lstm and gru layers' time loops over one part of the batch (rows lo:hi, a part of
batch_split), on cpu_recurrent's kernels, with their dh/dc state in the layer's scratch arrays:
the LSTM's fused loops (one Numba call per part) where cpu_recurrent.fused_gemm found a gemm
before the split, else a kernel per step (serial or parallel: kernel_jit.variant) and NumPy's
matmul between steps. The kernels are looked up on their module at each call (tests count them).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from worker.engine import cpu_recurrent as kernels
from worker.engine.kernel_jit import variant


def lstm_cell_kernel(size: int) -> Any:
    """The lstm_cell kernel, kernel(gates, c_prev, c_next), for calls over `size` gate values
    (picked once per time loop, not per step)."""
    return variant(kernels._LSTM_CELL, size)


def lstm_forward(gemm: Any, proj: np.ndarray, bias: np.ndarray, w_hh_t: np.ndarray, hs: np.ndarray,
                 cs: np.ndarray, tanh_c: np.ndarray, lo: int, hi: int) -> None:
    """cpu_recurrent._lstm_forward over batch rows lo:hi (gemm: cpu_recurrent.fused_gemm's)."""
    kernels._LSTM_FORWARD(gemm, kernels.chunked(), proj, bias, w_hh_t, hs, cs, tanh_c, lo, hi)


def _state(layer: Any, part: int, rows: int, names: str) -> list[np.ndarray]:
    """The part's (rows, units) loop state arrays, zeroed."""
    arrays = [layer.scratch(f"{name}{part}", (rows, layer.units)) for name in names.split()]
    for array in arrays:
        array[...] = 0
    return arrays


def lstm_bptt(layer: Any, gemm: Any, grad_out: np.ndarray, dgates: np.ndarray, w_hh: np.ndarray, lo: int,
              hi: int, part: int) -> None:
    """The LSTM's backward time loop over batch rows lo:hi (layer: its saved forward state; gemm:
    cpu_recurrent.fused_gemm's, found before the split, or None: per-step kernels; w_hh: W_hh in
    loop gate order, the forward's, LSTM._loop_weights) -> dgates[:, lo:hi] (T, rows, 4u)."""
    gates, cs, tanh_c = layer._gates[:, lo:hi], layer._cs[:, lo:hi], layer._tanh_c[:, lo:hi]
    dgates_all, dgates = dgates, dgates[:, lo:hi]
    dh, dc = _state(layer, part, hi - lo, "dh dc")
    if gemm is not None:
        every_step = layer.return_sequences
        upstream = grad_out if every_step else grad_out[:, None]
        kernels._LSTM_BACKWARD(gemm, kernels.chunked(), layer._gates, layer._cs, layer._tanh_c, upstream,
                               every_step, w_hh, dgates_all, dh, dc, lo, hi)
        return
    kernel = variant(kernels._LSTM_STEP, dgates[0].size)
    for t in range(gates.shape[0] - 1, -1, -1):
        layer._add_upstream(dh, grad_out, t, lo)
        kernel(gates[t], cs[t], tanh_c[t], dh, dc, dgates[t])
        if t:
            np.matmul(dgates[t], w_hh, out=dh)


def gru_bptt(layer: Any, grad_out: np.ndarray, d_in: np.ndarray, d_hid: np.ndarray, lo: int, hi: int,
             part: int) -> None:
    """The GRU's backward time loop over batch rows lo:hi -> d_in, d_hid[:, lo:hi] (T, rows, 3u)."""
    gates, hs, hp_n = layer._gates[:, lo:hi], layer._hs[:, lo:hi], layer._hp_n[:, lo:hi]
    w_hh, d_in, d_hid = layer._p("weight_hh_l0"), d_in[:, lo:hi], d_hid[:, lo:hi]
    (dh,), through = _state(layer, part, hi - lo, "dh"), layer.scratch(f"through{part}", (hi - lo, layer.units))
    kernel = variant(kernels._GRU_STEP, d_in[0].size)
    for t in range(gates.shape[0] - 1, -1, -1):
        layer._add_upstream(dh, grad_out, t, lo)
        kernel(gates[t], hs[t], hp_n[t], dh, d_in[t], d_hid[t])
        if t:
            dh += np.matmul(d_hid[t], w_hh, out=through)
