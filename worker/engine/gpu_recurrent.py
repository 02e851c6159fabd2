"""Fused CUDA gate kernels (CuPy) for one time step of lstm, gru and rnn, forward and backward.

Each step is one cuBLAS product (h_{t-1} @ W_hh^T) plus one launch here, instead of six to ten
elementwise launches (the array formulation of layers/recurrent.py and gated.py). Layouts
are the layer's: LSTM gates in its loop order (i, f, o, g), GRU (r, z, n), all (N, G*u) rows.

    lstm_forward(gates, hh, c_prev, c, tanh_c, h)   # gates: pre-activations in, activated out
    lstm_backward(gates, c_prev, tanh_c, dh, dc, dgates)
    gru_forward(gates, hh, b_hh, h_prev, hp_n, h)
    gru_backward(gates, h_prev, hp_n, dh, d_in, d_hid)
    rnn_forward(proj, hh, h); rnn_backward(dh, h, dz)
    hs = run(layer, proj); d_in, d_hid = bptt(layer, grad_out)  # a layer's whole time loops

`hh` None means step 0 (h_{t-1} = 0: no product). The backward kernels compute exactly
cpu_recurrent's per-element formulas (their Numba kernels are the references); the forward
references below are the layer's loop bodies written out per step.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np

from worker.engine.gpu_kernels import THREADS, blocks_for, c_type, raw_kernel

_HEAD = """
typedef {T} T;
__device__ __forceinline__ T sig(T x) {{ return T(1) / (T(1) + exp(-x)); }}
"""

LSTM_FORWARD = _HEAD + """
extern "C" __global__ void lstm_forward(T* gates, const T* hh, const T* c_prev, T* c, T* tanh_c, T* h,
                                        long long n, long long u, int has_hh) {{
    for (long long k = (long long)blockIdx.x * blockDim.x + threadIdx.x; k < n * u;
         k += (long long)gridDim.x * blockDim.x) {{
        long long r = k / u, j = k - r * u, base = r * 4 * u + j;
        T pre[4];
        for (int q = 0; q < 4; ++q) pre[q] = gates[base + q * u] + (has_hh ? hh[base + q * u] : T(0));
        T i = sig(pre[0]), f = sig(pre[1]), o = sig(pre[2]), g = tanh(pre[3]);
        gates[base] = i; gates[base + u] = f; gates[base + 2 * u] = o; gates[base + 3 * u] = g;
        T cn = f * c_prev[k] + i * g;
        T tc = tanh(cn);
        c[k] = cn; tanh_c[k] = tc; h[k] = o * tc;
    }}
}}
"""

LSTM_BACKWARD = _HEAD + """
extern "C" __global__ void lstm_backward(const T* gates, const T* c_prev, const T* tanh_c, const T* dh, T* dc,
                                         T* dgates, long long n, long long u) {{
    for (long long k = (long long)blockIdx.x * blockDim.x + threadIdx.x; k < n * u;
         k += (long long)gridDim.x * blockDim.x) {{
        long long r = k / u, j = k - r * u, base = r * 4 * u + j;
        T i = gates[base], f = gates[base + u], o = gates[base + 2 * u], g = gates[base + 3 * u];
        T hv = dh[k], tc = tanh_c[k];
        T cell = dc[k] + hv * o * (T(1) - tc * tc);
        dgates[base] = cell * g * ((T(1) - i) * i);
        dgates[base + u] = cell * c_prev[k] * ((T(1) - f) * f);
        dgates[base + 2 * u] = hv * tc * ((T(1) - o) * o);
        dgates[base + 3 * u] = cell * i * (T(1) - g * g);
        dc[k] = cell * f;
    }}
}}
"""

GRU_FORWARD = _HEAD + """
extern "C" __global__ void gru_forward(T* gates, const T* hh, const T* b_hh, const T* h_prev, T* hp_n, T* h,
                                       long long n, long long u, int has_hh) {{
    for (long long k = (long long)blockIdx.x * blockDim.x + threadIdx.x; k < n * u;
         k += (long long)gridDim.x * blockDim.x) {{
        long long r = k / u, j = k - r * u, base = r * 3 * u + j;
        T hid[3];
        for (int q = 0; q < 3; ++q) hid[q] = (has_hh ? hh[base + q * u] : T(0)) + b_hh[q * u + j];
        T rg = sig(gates[base] + hid[0]), z = sig(gates[base + u] + hid[1]);
        T nw = tanh(gates[base + 2 * u] + rg * hid[2]);
        gates[base] = rg; gates[base + u] = z; gates[base + 2 * u] = nw;
        hp_n[k] = hid[2];
        h[k] = (h_prev[k] - nw) * z + nw;
    }}
}}
"""

GRU_BACKWARD = _HEAD + """
extern "C" __global__ void gru_backward(const T* gates, const T* h_prev, const T* hp_n, T* dh, T* d_in, T* d_hid,
                                        long long n, long long u) {{
    for (long long k = (long long)blockIdx.x * blockDim.x + threadIdx.x; k < n * u;
         k += (long long)gridDim.x * blockDim.x) {{
        long long r = k / u, j = k - r * u, base = r * 3 * u + j;
        T hv = dh[k], rg = gates[base], z = gates[base + u], nw = gates[base + 2 * u];
        T dn = (T(1) - z) * hv * (T(1) - nw * nw);
        T dz = (h_prev[k] - nw) * hv * ((T(1) - z) * z);
        T dr = dn * hp_n[k] * ((T(1) - rg) * rg);
        d_in[base] = dr; d_in[base + u] = dz; d_in[base + 2 * u] = dn;
        d_hid[base] = dr; d_hid[base + u] = dz; d_hid[base + 2 * u] = dn * rg;
        dh[k] = hv * z;
    }}
}}
"""


@lru_cache(maxsize=None)
def _elementwise(name: str) -> Any:
    import cupy  # noqa: PLC0415  (only where a GPU trains)

    if name == "rnn_forward":
        return cupy.ElementwiseKernel("T p, T hh", "T h", "h = tanh(p + hh)", "bps_rnn_forward")
    if name == "rnn_first":
        return cupy.ElementwiseKernel("T p", "T h", "h = tanh(p)", "bps_rnn_first")
    return cupy.ElementwiseKernel("T dh, T h", "T dz", "dz = dh * (T(1) - h * h)", "bps_rnn_backward")


def _launch(source: str, name: str, rows: Any, units: int, *args: Any) -> None:
    n = rows.shape[0]
    kernel = raw_kernel(source.format(T=c_type(rows.dtype)), name)
    kernel((blocks_for(n * units),), (THREADS,), (*args, np.int64(n), np.int64(units)))


def lstm_forward(gates: Any, hh: Any, c_prev: Any, c: Any, tanh_c: Any, h: Any) -> None:
    u = c.shape[1]
    has_hh = np.int32(hh is not None)
    n = gates.shape[0]
    kernel = raw_kernel(LSTM_FORWARD.format(T=c_type(gates.dtype)), "lstm_forward")
    kernel((blocks_for(n * u),), (THREADS,),
           (gates, gates if hh is None else hh, c_prev, c, tanh_c, h, np.int64(n), np.int64(u), has_hh))


def lstm_backward(gates: Any, c_prev: Any, tanh_c: Any, dh: Any, dc: Any, dgates: Any) -> None:
    _launch(LSTM_BACKWARD, "lstm_backward", dh, dh.shape[1], gates, c_prev, tanh_c, dh, dc, dgates)


def gru_forward(gates: Any, hh: Any, b_hh: Any, h_prev: Any, hp_n: Any, h: Any) -> None:
    n, u = h.shape
    kernel = raw_kernel(GRU_FORWARD.format(T=c_type(gates.dtype)), "gru_forward")
    kernel((blocks_for(n * u),), (THREADS,), (gates, gates if hh is None else hh, b_hh, h_prev, hp_n, h,
                                              np.int64(n), np.int64(u), np.int32(hh is not None)))


def gru_backward(gates: Any, h_prev: Any, hp_n: Any, dh: Any, d_in: Any, d_hid: Any) -> None:
    _launch(GRU_BACKWARD, "gru_backward", dh, dh.shape[1], gates, h_prev, hp_n, dh, d_in, d_hid)


def rnn_forward(proj: Any, hh: Any, h: Any) -> None:
    if hh is None:
        _elementwise("rnn_first")(proj, h)
    else:
        _elementwise("rnn_forward")(proj, hh, h)


def rnn_backward(dh: Any, h: Any, dz: Any) -> None:
    _elementwise("rnn_backward")(dh, h, dz)


# --- the layers' time loops on the GPU (the layer's buffers and saved state, as its NumPy loops) --
def _recurrence(layer: Any, hs: Any, t: int, w_hh_t: Any, tmp: Any) -> Any:
    """h_{t-1} @ W_hh^T into tmp, or None at step 0 (h_{-1} = 0)."""
    return layer.xp.matmul(hs[t], w_hh_t, out=tmp) if t else None


def lstm_run(layer: Any, proj: Any) -> Any:
    """LSTM._steps on the GPU: proj (T, N, 4u) pre-activations (loop gate order) -> hs (T+1, N, u)."""
    steps, n, gh = proj.shape
    u = layer.units
    hs, cs = layer.scratch("hs", (steps + 1, n, u)), layer.scratch("cs", (steps + 1, n, u))
    tanh_c, tmp = layer.scratch("tanh_c", (steps, n, u)), layer.scratch("tmp", (n, gh))
    hs[0], cs[0] = 0, 0
    w_hh_t = layer._w("weight_hh_l0").T
    for t in range(steps):
        lstm_forward(proj[t], _recurrence(layer, hs, t, w_hh_t, tmp), cs[t], cs[t + 1], tanh_c[t], hs[t + 1])
    layer._gates, layer._cs, layer._tanh_c = proj, cs, tanh_c
    return hs


def lstm_bptt(layer: Any, grad_out: Any, dgates: Any) -> Any:
    """LSTM._bptt's loop (as cpu_recurrent_loops.lstm_bptt) -> dgates (T, N, 4u)."""
    xp, gates, w_hh = layer.xp, layer._gates, layer._w("weight_hh_l0")
    steps, n, _ = gates.shape
    dh, dc = xp.zeros((n, layer.units), layer.dtype), xp.zeros((n, layer.units), layer.dtype)
    for t in range(steps - 1, -1, -1):
        layer._add_upstream(dh, grad_out, t)
        lstm_backward(gates[t], layer._cs[t], layer._tanh_c[t], dh, dc, dgates[t])
        xp.matmul(dgates[t], w_hh, out=dh)
    return dgates


def gru_run(layer: Any, proj: Any) -> Any:
    """GRU._steps on the GPU: proj (T, N, 3u) input-side pre-activations -> hs (T+1, N, u)."""
    hs, hp_n, tmp, b_hh, w_hh_t = layer.loop_state(proj)
    for t in range(proj.shape[0]):
        gru_forward(proj[t], _recurrence(layer, hs, t, w_hh_t, tmp), b_hh, hs[t], hp_n[t], hs[t + 1])
    layer._gates, layer._hp_n = proj, hp_n
    return hs


def gru_bptt(layer: Any, grad_out: Any, d_in: Any, d_hid: Any) -> None:
    """GRU._bptt's loop (as cpu_recurrent_loops.gru_bptt) -> d_in, d_hid (T, N, 3u)."""
    xp, gates, hs, w_hh = layer.xp, layer._gates, layer._hs, layer._p("weight_hh_l0")
    steps, n, _ = gates.shape
    dh, through = xp.zeros((n, layer.units), layer.dtype), xp.empty((n, layer.units), layer.dtype)
    for t in range(steps - 1, -1, -1):
        layer._add_upstream(dh, grad_out, t)
        gru_backward(gates[t], hs[t], layer._hp_n[t], dh, d_in[t], d_hid[t])
        dh += xp.matmul(d_hid[t], w_hh, out=through)


def rnn_run(layer: Any, proj: Any) -> Any:
    """SimpleRNN._steps on the GPU -> hs (T+1, N, u)."""
    steps, n, u = proj.shape
    hs, tmp = layer.scratch("hs", (steps + 1, n, u)), layer.scratch("tmp", (n, u))
    hs[0] = 0
    w_hh_t = layer._p("weight_hh_l0").T
    for t in range(steps):
        rnn_forward(proj[t], _recurrence(layer, hs, t, w_hh_t, tmp), hs[t + 1])
    return hs


def rnn_bptt(layer: Any, grad_out: Any) -> tuple[Any, Any]:
    """SimpleRNN._bptt -> (dz, dz) (T, N, u)."""
    xp, hs, w_hh = layer.xp, layer._hs, layer._p("weight_hh_l0")
    steps, n, u = hs.shape[0] - 1, hs.shape[1], hs.shape[2]
    dz, dh = layer.scratch("dz", (steps, n, u)), xp.zeros((n, u), dtype=layer.dtype)
    for t in range(steps - 1, -1, -1):
        layer._add_upstream(dh, grad_out, t)
        rnn_backward(dh, hs[t + 1], dz[t])
        xp.matmul(dz[t], w_hh, out=dh)
    return dz, dz


def run(layer: Any, proj: Any) -> Any:
    """The layer's `_steps` on the GPU (after _Recurrent._run added the bias): hs (T+1, N, u), with
    what its backward needs saved."""
    return {"lstm": lstm_run, "gru": gru_run}.get(layer.kind, rnn_run)(layer, proj)


def bptt(layer: Any, grad_out: Any) -> tuple[Any, Any]:
    """The layer's `_bptt` on the GPU: the (T, N, G*u) input- and hidden-side pre-activation grads."""
    steps, n = layer._hs.shape[0] - 1, layer._hs.shape[1]
    shape = (steps, n, layer.gates * layer.units)
    if layer.kind == "lstm":
        dgates = lstm_bptt(layer, grad_out, layer.scratch("dgates", shape))
        return dgates, dgates
    if layer.kind == "gru":
        d_in, d_hid = layer.scratch("d_in", shape), layer.scratch("d_hid", shape)
        gru_bptt(layer, grad_out, d_in, d_hid)
        return d_in, d_hid
    return rnn_bptt(layer, grad_out)


# --- NumPy references: the layer's per-step formulation (layers/gated.py) -------------------
def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


def reference_lstm_forward(gates: np.ndarray, hh: np.ndarray | None, c_prev: np.ndarray) -> tuple[np.ndarray, ...]:
    """(activated gates, c, tanh_c, h) of LSTM._steps's step (gates in the loop order i, f, o, g)."""
    u = c_prev.shape[1]
    g = gates + (0 if hh is None else hh)
    g[:, :3 * u] = _sigmoid(g[:, :3 * u])
    g[:, 3 * u:] = np.tanh(g[:, 3 * u:])
    c = g[:, u:2 * u] * c_prev + g[:, :u] * g[:, 3 * u:]
    tanh_c = np.tanh(c)
    return g, c, tanh_c, g[:, 2 * u:3 * u] * tanh_c


def reference_gru_forward(gates: np.ndarray, hh: np.ndarray | None, b_hh: np.ndarray,
                          h_prev: np.ndarray) -> tuple[np.ndarray, ...]:
    """(activated gates r, z, n, hp_n, h) of GRU._steps's step."""
    u = h_prev.shape[1]
    tmp = np.broadcast_to(b_hh, gates.shape) + (0 if hh is None else hh)
    g = gates.copy()
    g[:, :2 * u] = _sigmoid(g[:, :2 * u] + tmp[:, :2 * u])
    hp_n = tmp[:, 2 * u:].copy()
    g[:, 2 * u:] = np.tanh(g[:, 2 * u:] + g[:, :u] * hp_n)
    return g, hp_n, (h_prev - g[:, 2 * u:]) * g[:, u:2 * u] + g[:, 2 * u:]


def reference_lstm_backward(gates: np.ndarray, c_prev: np.ndarray, tanh_c: np.ndarray, dh: np.ndarray,
                            dc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(dgates, dc_{t-1}) by cpu_recurrent's kernel."""
    from worker.engine.cpu_recurrent import _LSTM_STEP  # noqa: PLC0415

    dc, dgates = dc.copy(), np.empty_like(gates)
    _LSTM_STEP[0](gates, c_prev, tanh_c, dh.copy(), dc, dgates)
    return dgates, dc


def reference_gru_backward(gates: np.ndarray, h_prev: np.ndarray, hp_n: np.ndarray,
                           dh: np.ndarray) -> tuple[np.ndarray, ...]:
    """(d_in, d_hid, dh * z) by cpu_recurrent's kernel."""
    from worker.engine.cpu_recurrent import _GRU_STEP  # noqa: PLC0415

    dh, d_in, d_hid = dh.copy(), np.empty_like(gates), np.empty_like(gates)
    _GRU_STEP[0](gates, h_prev, hp_n, dh, d_in, d_hid)
    return d_in, d_hid, dh
