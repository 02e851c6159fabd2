"""Fused CUDA kernels (CuPy) for the dense training step: each elementwise chain is one launch.

    bias_act(z, bias, "relu", out=None)                 # z (N, F) <- z + bias; a = act(z + bias)
    act_backward_bias(g, a, z, "relu", out, grad_bias)  # out = g * act'(.), grad_bias = column sums
    softmax_cross_entropy(logits, y, grad, acc, scale)  # acc[0] += scale * sum(row losses); acc[1] += hits
    sigmoid_cross_entropy(logits, y, grad, acc, scale)  # the same for BCE on logits
    gather_rows(X, y, perm, start, xb, yb)              # xb, yb <- X[perm[start:start+m]], y[...]

Each kernel replaces a NumPy formulation that stays the reference (and the CPU path):
activations.Activation.forward/backward, losses.CrossEntropy.array_value_and_grad /
BinaryCrossEntropy.value_and_grad, np.take; the `reference_*` functions below call them, and
tests/worker/engine/test_gpu_kernels.py (marked `gpu`) holds each kernel to its reference.
Loss and hit counts go into a float64 device accumulator (atomicAdd per block): no host sync.
CuPy is imported on first use only; kernels are built (and compiled by CuPy, cached on disk)
once per dtype and activation.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np

from worker.engine.activations import _INV_SQRT_2PI, _SQRT_HALF, ELU_ALPHA, LEAKY_SLOPE, get_activation

THREADS = 256
MAX_BLOCKS = 4096
_C_TYPES = {np.dtype(np.float32): "float", np.dtype(np.float64): "double", np.dtype(np.int64): "long long"}

# act(x) of the pre-activation x = z + bias, in CUDA; T is the element type. Each keeps NaN a NaN.
FORWARD = {
    "linear": "x",
    "relu": "(x > T(0) || x != x) ? x : T(0)",
    "leaky_relu": f"x >= x * T({LEAKY_SLOPE!r}) ? x : x * T({LEAKY_SLOPE!r})",
    "elu": f"x > T(0) ? x : expm1(x) * T({ELU_ALPHA!r})",
    "sigmoid": "x >= T(0) ? T(1) / (T(1) + exp(-x)) : exp(x) / (T(1) + exp(x))",
    "tanh": "tanh(x)",
    "gelu": f"x * (T(0.5) * (T(1) + erf(x * T({_SQRT_HALF!r}))))",
    "softplus": "(x > T(0) ? x : T(0)) + log1p(exp(-fabs(x)))",
}
# dL/dz from g = dL/da, the output a and (gelu only) the pre-activation z
BACKWARD = {
    "linear": "g",
    "relu": "g * (a > T(0) ? T(1) : T(0))",
    "leaky_relu": f"g * (a > T(0) ? T(1) : T({LEAKY_SLOPE!r}))",
    "elu": f"g * (a > T(0) ? T(1) : a + T({ELU_ALPHA!r}))",
    "sigmoid": "g * (a * (T(1) - a))",
    "tanh": "g * (T(1) - a * a)",
    "gelu": (f"g * (T(0.5) * (T(1) + erf(z * T({_SQRT_HALF!r}))) "
             f"+ z * (exp(T(-0.5) * z * z) * T({_INV_SQRT_2PI!r})))"),
    "softplus": "g * (-expm1(-a))",
}

BLOCK_SUM = """  // a template part: braces doubled for str.format
__device__ double block_sum(double v, double* part) {{
    part[threadIdx.x] = v;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {{
        if (threadIdx.x < s) part[threadIdx.x] += part[threadIdx.x + s];
        __syncthreads();
    }}
    double total = part[0];
    __syncthreads();
    return total;
}}
"""

ACT_BACKWARD_BIAS = """
typedef {T} T;
#define COLS 32
#define SLICES 8
extern "C" __global__ void act_backward_bias(const T* gin, const T* ain, const T* zin, T* dz, T* grad_bias,
                                             long long n, long long f) {{
    __shared__ T part[SLICES][COLS + 1];
    long long j = (long long)blockIdx.x * COLS + threadIdx.x;
    T acc = T(0);
    if (j < f) {{
        for (long long r = threadIdx.y; r < n; r += SLICES) {{
            long long k = r * f + j;
            T g = gin[k], a = ain[k], z = zin[k];
            T d = {EXPR};
            dz[k] = d;
            acc += d;
        }}
    }}
    part[threadIdx.y][threadIdx.x] = acc;
    __syncthreads();
    if (threadIdx.y == 0 && j < f) {{
        T s = T(0);
        for (int y = 0; y < SLICES; ++y) s += part[y][threadIdx.x];
        grad_bias[j] = s;
    }}
}}
"""

SOFTMAX_CE = BLOCK_SUM + """
typedef {T} T;
extern "C" __global__ void softmax_ce(const T* logits, const long long* y, T* grad, double* acc, T inv_n,
                                      double scale, long long n, long long k) {{
    __shared__ double part[256];
    long long r = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    double loss = 0.0, hit = 0.0;
    if (r < n) {{
        const T* row = logits + r * k;
        T* out = grad + r * k;
        long long target = y[r];
        T top = row[0];
        long long arg = 0;
        for (long long j = 1; j < k; ++j) {{  // np.argmax: the first largest, a NaN first of all
            T v = row[j];
            if (v > top || (v != v && top == top)) {{ top = v; arg = j; }}
        }}
        T sum_exp = T(0);
        for (long long j = 0; j < k; ++j) {{ T e = exp(row[j] - top); out[j] = e; sum_exp += e; }}
        T s = inv_n / sum_exp;
        for (long long j = 0; j < k; ++j) out[j] *= s;
        if (target >= 0 && target < k) {{  // labels are checked on the host (Network.targets)
            loss = (double)(log(sum_exp) - (row[target] - top));
            out[target] -= inv_n;
            hit = arg == target ? 1.0 : 0.0;
        }} else {{
            loss = __longlong_as_double(0x7ff8000000000000LL);  // NaN
        }}
    }}
    double loss_sum = block_sum(loss, part), hit_sum = block_sum(hit, part);
    if (threadIdx.x == 0) {{ atomicAdd(acc, loss_sum * scale); atomicAdd(acc + 1, hit_sum); }}
}}
"""

SIGMOID_CE = BLOCK_SUM + """
typedef {T} T;
extern "C" __global__ void sigmoid_ce(const T* logits, const T* y, T* grad, double* acc, T inv_size,
                                      double scale, double hit_scale, long long size) {{
    __shared__ double part[256];
    double loss = 0.0, hit = 0.0;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < size;
         i += (long long)gridDim.x * blockDim.x) {{
        T x = logits[i], t = y[i];
        loss += (double)((x > T(0) ? x : T(0)) - x * t + log1p(exp(-fabs(x))));
        T sig = x >= T(0) ? T(1) / (T(1) + exp(-x)) : exp(x) / (T(1) + exp(x));
        grad[i] = (sig - t) * inv_size;
        hit += ((x > T(0)) == (t > T(0.5))) ? 1.0 : 0.0;
    }}
    double loss_sum = block_sum(loss, part), hit_sum = block_sum(hit, part);
    if (threadIdx.x == 0) {{ atomicAdd(acc, loss_sum * scale); atomicAdd(acc + 1, hit_sum * hit_scale); }}
}}
"""

GATHER_ROWS = """
extern "C" __global__ void gather_rows(const {TX}* X, const {TY}* Y, const long long* perm, {TX}* xb, {TY}* yb,
                                       long long start, long long m, long long dx, long long dy) {{
    long long step = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < m * dx; i += step) {{
        long long r = i / dx;
        xb[i] = X[perm[start + r] * dx + (i - r * dx)];
    }}
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < m * dy; i += step) {{
        long long r = i / dy;
        yb[i] = Y[perm[start + r] * dy + (i - r * dy)];
    }}
}}
"""


def c_type(dtype: Any) -> str:
    return _C_TYPES[np.dtype(dtype)]


def blocks_for(size: int) -> int:
    return max(1, min(-(-size // THREADS), MAX_BLOCKS))


@lru_cache(maxsize=None)
def raw_kernel(source: str, name: str) -> Any:
    import cupy  # noqa: PLC0415  (only where a GPU trains)

    return cupy.RawKernel(source, name)


def bias_act_operation(activation: str, keep_z: bool) -> str:
    """The ElementwiseKernel body: in "T b", out "T z" (in place) or "T z, T a" (keep_z: gelu,
    whose backward reads z + bias)."""
    if keep_z:
        return f"T x = z + b; z = x; a = {FORWARD[activation]};"
    return f"T x = z + b; z = {FORWARD[activation]};"


@lru_cache(maxsize=None)
def _bias_act_kernel(activation: str, keep_z: bool) -> Any:
    import cupy  # noqa: PLC0415

    return cupy.ElementwiseKernel("T b", "T z, T a" if keep_z else "T z", bias_act_operation(activation, keep_z),
                                  f"bps_bias_{activation}" + ("_keep" if keep_z else ""))


def bias_act(z: Any, bias: Any, activation: str, out: Any = None) -> Any:
    """z (N, F) <- z + bias and act(z + bias) into `out` (z itself when None or z): one launch."""
    if out is None or out is z:
        _bias_act_kernel(activation, False)(bias, z)
        return z
    _bias_act_kernel(activation, True)(bias, z, out)
    return out


def act_backward_bias(grad_a: Any, a: Any, z: Any, activation: str, out: Any, grad_bias: Any) -> Any:
    """out (N, F) <- grad_a * act'(z, a) (out may be grad_a) and grad_bias (F,) <- its column
    sums, in one launch; z is read by gelu only (pass None otherwise). All C-contiguous."""
    n, f = grad_a.shape
    out = grad_a if out is None else out
    source = ACT_BACKWARD_BIAS.format(T=c_type(grad_a.dtype), EXPR=BACKWARD[activation])
    kernel = raw_kernel(source, "act_backward_bias")
    kernel((-(-f // 32),), (32, 8), (grad_a, a, a if z is None else z, out, grad_bias, np.int64(n), np.int64(f)))
    return out


def softmax_cross_entropy(logits: Any, y: Any, grad: Any, acc: Any, scale: float) -> None:
    """grad = (softmax - onehot) / N; acc[0] += scale * sum of the rows' losses (scale 1/N: the
    mean), acc[1] += rows whose first largest logit is the target (np.argmax's rule)."""
    n, k = logits.shape
    kernel = raw_kernel(SOFTMAX_CE.format(T=c_type(logits.dtype)), "softmax_ce")
    kernel((-(-n // THREADS),), (THREADS,),
           (logits, y, grad, acc, logits.dtype.type(1.0 / n), np.float64(scale), np.int64(n), np.int64(k)))


def sigmoid_cross_entropy(logits: Any, y: Any, grad: Any, acc: Any, scale: float) -> None:
    """BCE with logits, y of the logits' shape: grad = (sigmoid - y) / size; acc[0] += scale *
    sum of the elements' losses (scale 1/size: the mean); acc[1] += hits / units per row."""
    size = logits.size
    kernel = raw_kernel(SIGMOID_CE.format(T=c_type(logits.dtype)), "sigmoid_ce")
    kernel((blocks_for(size),), (THREADS,),
           (logits, y, grad, acc, logits.dtype.type(1.0 / size), np.float64(scale),
            np.float64(logits.shape[0] / size), np.int64(size)))


def gather_rows(X: Any, y: Any, perm: Any, start: int, xb: Any, yb: Any) -> tuple[Any, Any]:
    """xb[:m], yb[:m] <- the rows perm[start:start + m] of X and y (m = the batch size of the
    call, xb.shape[0] at most); perm int64 on the device; all C-contiguous. One launch."""
    m = min(xb.shape[0], perm.shape[0] - start)
    dx, dy = X.size // X.shape[0], y.size // max(y.shape[0], 1)
    source = GATHER_ROWS.format(TX=c_type(X.dtype), TY=c_type(y.dtype))
    raw_kernel(source, "gather_rows")((blocks_for(m * dx),), (THREADS,),
                                      (X, y, perm, xb, yb, np.int64(start), np.int64(m), np.int64(dx), np.int64(dy)))
    return xb[:m], yb[:m]


# --- the NumPy formulations each kernel replaces (what the gpu tests compare against) ---------
def reference_bias_act(z: np.ndarray, bias: np.ndarray, activation: str) -> tuple[np.ndarray, np.ndarray]:
    """(z + bias, act(z + bias)) by activations.py."""
    act = get_activation(activation)
    z = z + bias
    return z, act.forward(z.copy())


def reference_act_backward_bias(grad_a: np.ndarray, a: np.ndarray, z: np.ndarray,
                                activation: str) -> tuple[np.ndarray, np.ndarray]:
    dz = get_activation(activation).backward(grad_a.copy(), z, a)
    return dz, dz.sum(axis=0)


def reference_loss(loss: Any, logits: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray, float]:
    """(mean loss, gradient, correct) by losses.py's array formulation (a CrossEntropy or
    BinaryCrossEntropy instance)."""
    if loss.name == "cross_entropy":
        value, grad = loss.array_value_and_grad(logits, y)
    else:
        value, grad = loss.value_and_grad(logits, y)
    return float(value), grad.copy(), float(loss.correct(logits, y))
