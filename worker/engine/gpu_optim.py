"""The optimizer step of the whole flat parameter buffer as one CUDA kernel (CuPy), with each
parameter's squared gradient norm in the same pass (gpu_kernels for the dense step).

    table = chunk_table(net.flat_bounds, xp)              # once per network
    step(optimizer, flat_grads, lr, table, squares, clip)  # squares (n,) float64, zero before
    finish_norms(squares, norms)                           # norms += sqrt(squares); squares = 0

The flat buffer is cut into CHUNK-element pieces that never straddle two parameters (as
cpu_optimizer_steps does); one block per piece adds its sum of g**2 to its parameter's slot. Rules:
PyTorch's SGD (momentum, Nesterov), Adam, AdamW, RMSprop, Adagrad, exactly as optimizers.py,
which stays the reference (`reference_step`). With gradient clipping a first launch sums the
squares, the update launch scales g by min(clip / (norm + 1e-6), 1) read from them: both on
the device, no host sync.
"""
from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

import numpy as np

from worker.engine.gpu_kernels import BLOCK_SUM, THREADS, c_type, raw_kernel

CHUNK = 4096
SGD, MOMENTUM, NESTEROV, ADAM, RMSPROP, ADAGRAD = range(6)
NORMS_ONLY, UPDATE_AND_NORMS, CLIPPED_UPDATE = range(3)

OPT_STEP = BLOCK_SUM + """
typedef {T} T;
extern "C" __global__ void opt_step(T* p, const T* grad, T* s1, T* s2, const long long* table, double* squares,
                                    int n_params, int rule, int mode, double clip, T lr, T h1, T h2, T h3, T h4,
                                    T h5, T h6, T eps) {{
    __shared__ double part[256];
    long long lo = table[3 * blockIdx.x], hi = table[3 * blockIdx.x + 1], param = table[3 * blockIdx.x + 2];
    T coef = T(1);
    if (mode == 2) {{  // torch.nn.utils.clip_grad_norm_ as training.py: the squares are complete
        double total = 0.0;
        for (int k = 0; k < n_params; ++k) total += squares[k];
        double c = clip / (sqrt(total) + 1e-6);
        coef = T((c != c || c < 1.0) ? c : 1.0);  // NaN stays NaN, as np.minimum
    }}
    double acc = 0.0;
    for (long long i = lo + threadIdx.x; i < hi; i += blockDim.x) {{
        T g = grad[i];
        acc += (double)(g * g);
        if (mode == 0) continue;
        g *= coef;
        if (rule == 0) {{
            p[i] -= lr * g;
        }} else if (rule == 1 || rule == 2) {{  // h1 = momentum
            T b = h1 * s1[i] + g;
            s1[i] = b;
            p[i] -= lr * (rule == 2 ? g + h1 * b : b);
        }} else if (rule == 3) {{  // lr = lr / (1 - beta1^t); h1, h2 = beta1, 1 - beta1; h3, h4 likewise
            T m = h1 * s1[i] + h2 * g;     // h5 = 1 - lr * weight_decay; h6 = 1 / sqrt(1 - beta2^t)
            T v = h3 * s2[i] + h4 * (g * g);
            s1[i] = m;
            s2[i] = v;
            p[i] = p[i] * h5 - lr * m / (sqrt(v) * h6 + eps);
        }} else if (rule == 4) {{  // h1, h2 = rho, 1 - rho
            T v = h1 * s1[i] + h2 * g * g;
            s1[i] = v;
            p[i] -= lr * (g / (sqrt(v) + eps));
        }} else {{
            T s = s1[i] + g * g;
            s1[i] = s;
            p[i] -= lr * (g / (sqrt(s) + eps));
        }}
    }}
    if (mode == 2) return;
    double total = block_sum(acc, part);
    if (threadIdx.x == 0) atomicAdd(squares + param, total);
}}
"""


def chunk_table(bounds: np.ndarray, xp: Any, size: int = CHUNK) -> Any:
    """(C, 3) int64 rows (start, end, parameter) on the device: each parameter cut in pieces."""
    rows = [(lo, min(lo + size, int(bounds[k + 1])), k)
            for k in range(len(bounds) - 1) for lo in range(int(bounds[k]), int(bounds[k + 1]), size)]
    return xp.asarray(np.asarray(rows, np.int64).reshape(-1, 3))


@lru_cache(maxsize=None)
def _source(c_type_name: str) -> str:
    """OPT_STEP for one C type, formatted once: the same string object every step, whose hash
    Python keeps, so raw_kernel's cache lookup does not rehash the whole source."""
    return OPT_STEP.format(T=c_type_name)


def _rule(optimizer: Any, lr: float) -> tuple[int, list[float], float]:
    """(rule, [lr, h1..h6], eps) for the kernel, from the optimizer's cfg and step count."""
    cfg, kind = optimizer.cfg, optimizer.cfg["type"]
    if kind == "sgd":
        mu = cfg["momentum"]
        rule = (NESTEROV if cfg["nesterov"] else MOMENTUM) if mu else SGD
        return rule, [lr, mu, 0, 0, 0, 0, 0], 0.0
    if kind in ("adam", "adamw"):
        b1, b2, t = cfg["beta1"], cfg["beta2"], optimizer.t
        return ADAM, [lr / (1 - b1 ** t), b1, 1 - b1, b2, 1 - b2, 1 - lr * (cfg.get("weight_decay") or 0),
                      1 / math.sqrt(1 - b2 ** t)], cfg["eps"]
    if kind == "rmsprop":
        return RMSPROP, [lr, cfg["rho"], 1 - cfg["rho"], 0, 0, 0, 0], cfg["eps"]
    return ADAGRAD, [lr, 0, 0, 0, 0, 0, 0], cfg["eps"]


def step(optimizer: Any, flat_grads: Any, lr: float, table: Any, squares: Any, clip: float | None) -> None:
    """One optimizer step of `optimizer.flat` (flat mode) from `flat_grads`, adding each
    parameter's sum of squared gradients (before clipping) to `squares`: one launch, two with
    clipping. `optimizer.t` counts the step, as Optimizer.step does."""
    optimizer.t += 1
    p = optimizer.flat
    rule, scalars, eps = _rule(optimizer, lr)
    slots = [optimizer.flat_state[s] for s in optimizer.slots] + [p, p]  # unused slots: any array
    kernel = raw_kernel(_source(c_type(p.dtype)), "opt_step")
    dt, n_params = p.dtype.type, np.int32(squares.shape[0])
    blocks = (table.shape[0],)

    def launch(mode: int) -> None:
        kernel(blocks, (THREADS,), (p, flat_grads, slots[0], slots[1], table, squares, n_params, np.int32(rule),
                                    np.int32(mode), np.float64(clip or 0), *(dt(s) for s in scalars), dt(eps)))

    if clip is None:
        launch(UPDATE_AND_NORMS)
        return
    launch(NORMS_ONLY)
    launch(CLIPPED_UPDATE)


def _finish_kernel() -> Any:
    import cupy  # noqa: PLC0415

    return cupy.ElementwiseKernel("", "float64 sq, float64 norms", "norms += sqrt(sq); sq = 0", "bps_finish_norms")


_FINISH: list[Any] = []


def finish_norms(squares: Any, norms: Any) -> None:
    """norms += sqrt(squares) and squares = 0 for the next step, in one launch."""
    if not _FINISH:
        _FINISH.append(_finish_kernel())
    _FINISH[0](squares, norms)


def reference_step(optimizer: Any, flat_grads: np.ndarray, lr: float, bounds: np.ndarray,
                   clip: float | None) -> np.ndarray:
    """The NumPy step the kernel replaces (training._Loop._step's unfused path): returns the
    squares; `flat_grads` is used as scratch, as there."""
    squares = np.array([np.dot(flat_grads[lo:hi], flat_grads[lo:hi]) for lo, hi in zip(bounds[:-1], bounds[1:])],
                       np.float64)
    if clip is not None:
        flat_grads *= np.minimum(clip / (np.sqrt(squares.sum()) + 1e-6), 1.0).astype(flat_grads.dtype)
    optimizer.step(None, lr, flat_grads=flat_grads)
    return squares
