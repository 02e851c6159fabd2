"""GEMM floor of bench_cnn_rnn's rnn / lstm / gru epochs: only the recurrent layer's matrix
products, with the engine's shapes and layouts and on its threads, and nothing else (no gate
math, no dense head, no optimizer). Where the floor takes longer than PyTorch's whole epoch, no
change outside the products can bring the engine to PyTorch's time with the BLAS in use.

Per batch of n rows, T steps, F features, u units and G gate blocks (as layers/recurrent.py and
layers/gated.py run them): the input projection (T*n, F) @ (F, G*u); T-1 recurrent products
(n, u) @ (u, G*u) forward and as many (n, G*u) @ (G*u, u) backward (none for dL/dh_{-1}); the
weight gradients (G*u, T*n) @ (T*n, F) and (G*u, T*n) @ (T*n, u), the bias gradients' GEMVs and
dL/dx (T*n, G*u) @ (G*u, F). The time loops run on the parts of the batch (batch_split) where
the engine splits them (each layer class's `gates` and `split_loops` are read from the engine).
The LSTM's loops make their products inside one Numba call per part (cpu_recurrent: NumPy's
OpenBLAS from the kernel, each in K-chunks); the floor's make them the same way.
"""
from __future__ import annotations

import time
from typing import Any

import numpy as np

MODELS = ("rnn", "gru", "lstm")


_jitted: dict[str, Any] = {}


def _layer_class(model: str) -> Any:
    from worker.engine.layers import layer_class  # noqa: PLC0415

    return layer_class(model)


def _arrays(model: str, n: int, steps: int, features: int, units: int) -> dict[str, Any]:
    rng, gh = np.random.default_rng(0), _layer_class(model).gates * units
    def rand(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.05).astype(np.float32)
    w_hh = rand(gh, units)
    w_hh_t = w_hh.T if model == "gru" else np.ascontiguousarray(w_hh.T)  # as each layer's forward
    return {"x": rand(steps * n, features), "w_ih": rand(gh, features), "w_hh": w_hh, "w_hh_t": w_hh_t,
            "h": rand(steps, n, units), "d": rand(steps, n, gh), "out_g": np.empty((n, gh), np.float32),
            "out_h": np.empty((n, units), np.float32), "ones": np.ones(steps * n, np.float32),
            "gemm": _fused_gemm(model, n * gh)}


def _fused_gemm(model: str, size: int) -> Any:
    """cpu_recurrent.fused_gemm where the engine runs that model's loops fused (the LSTM)."""
    if model != "lstm":
        return None
    from worker.engine import cpu_recurrent  # noqa: PLC0415

    return cpu_recurrent.fused_gemm(np.float32, size)


def _fused_products() -> Any:
    """products(gemm, chunked, left, right, out, lo, hi, beta): out = left[t, lo:hi] @ right
    (+ beta * out) for t >= 1, as the fused loops make them (cpu_recurrent._matmul_chunked), in
    one Numba call."""
    if "products" not in _jitted:
        import numba  # noqa: PLC0415

        from worker.engine.cpu_recurrent import _matmul_chunked  # noqa: PLC0415

        def products(gemm, chunked, left, right, out, lo, hi, beta):  # noqa: ANN001, ANN202
            for t in range(1, left.shape[0]):
                _matmul_chunked(gemm, left[t, lo:hi], right, out, beta, chunked)
        _jitted["products"] = numba.njit(nogil=True)(products)
    return _jitted["products"]


def _loop(a: dict[str, Any], backward: bool, split: bool) -> None:
    from worker.engine import batch_split, cpu_recurrent  # noqa: PLC0415

    def rows(lo: int, hi: int, part: int) -> None:
        out = (a["out_h"] if backward else a["out_g"])[lo:hi]
        if a["gemm"] is not None:
            left, right = (a["d"], a["w_hh"]) if backward else (a["h"], a["w_hh_t"])
            _fused_products()(a["gemm"], cpu_recurrent.chunked(), left, right, out, lo, hi, 0.0 if backward else 1.0)
            return
        for t in range(a["h"].shape[0]):
            if backward and t:
                np.matmul(a["d"][t, lo:hi], a["w_hh"], out=out)
            elif t:
                np.matmul(a["h"][t, lo:hi], a["w_hh_t"], out=out)
    n = a["h"].shape[1]
    batch_split.run(n, rows) if split else rows(0, n, 0)


def _step(model: str, a: dict[str, Any]) -> None:
    steps, n, gh = a["d"].shape
    d2, h2 = a["d"].reshape(steps * n, gh), a["h"].reshape(steps * n, -1)
    split_forward, split_backward = _layer_class(model).split_loops
    a["x"] @ a["w_ih"].T
    _loop(a, False, split_forward)
    _loop(a, True, split_backward)
    d2.T @ a["x"]
    d2.T @ h2
    a["ones"] @ d2
    if model == "gru":  # its hidden-side bias gradient has its own GEMV
        a["ones"] @ d2
    d2 @ a["w_ih"]


def floor_epoch(model: str, samples: int, batch: int, seq_shape: tuple[int, int], units: int, threads: int) -> float:
    """Seconds for the products of one epoch of `samples` rows in batches of `batch`."""
    from worker.engine.threads import thread_budget  # noqa: PLC0415

    steps, features = seq_shape
    sizes = [batch] * (samples // batch) + ([samples % batch] if samples % batch else [])
    arrays = {n: _arrays(model, n, steps, features, units) for n in set(sizes)}
    with thread_budget(threads, kernels=True):
        _step(model, arrays[sizes[0]])
        start = time.perf_counter()
        for n in sizes:
            _step(model, arrays[n])
        return time.perf_counter() - start
