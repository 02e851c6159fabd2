"""Activation functions: forward and backward on arrays of any shape, NumPy or CuPy.

    act = get_activation("relu")
    a = act.forward(z, out=None)              # out may be z itself (in place)
    dz = act.backward(grad_a, z, a, out=None)  # out may be grad_a itself (in place)

`backward` needs `a` always and `z` only when `act.needs_z` is true (gelu); a layer that
does not need z may compute the activation in place and pass `z=None`. Passing
`out=grad_a` overwrites the incoming gradient, which the caller must then no longer need.
The array module is taken from the argument (`xp_of`), so the same object serves CPU and GPU.

`act.init` names the weight initialisation that suits it: "he" (He/Kaiming normal,
std = sqrt(2 / fan_in)) for the ReLU family (relu, leaky_relu, elu, gelu), "glorot"
(Glorot/Xavier uniform, limit = sqrt(6 / (fan_in + fan_out))) for every other one.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

ACTIVATIONS = ("linear", "relu", "sigmoid", "tanh", "leaky_relu", "elu", "gelu", "softplus", "softmax")
LEAKY_SLOPE = 0.01
ELU_ALPHA = 1.0
_SQRT_HALF = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def xp_of(array: Any) -> Any:
    """The array module (numpy or cupy) an array belongs to."""
    if isinstance(array, np.ndarray) or np.isscalar(array):
        return np
    import cupy  # noqa: PLC0415

    return cupy.get_array_module(array)


def _erf(x: Any) -> Any:
    """Elementwise erf to float64 accuracy: SciPy/CuPy's special.erf, else math.erf per element."""
    xp = xp_of(x)
    if xp is not np:
        from cupyx.scipy.special import erf  # noqa: PLC0415

        return erf(x)
    try:
        from scipy.special import erf  # noqa: PLC0415
    except ImportError:  # slow but exact fallback when SciPy is absent
        return np.frompyfunc(math.erf, 1, 1)(x).astype(x.dtype)
    return erf(x).astype(x.dtype, copy=False)


class Activation:
    name = ""
    needs_z = False
    init = "glorot"
    gpu_fused = True  # has fused CUDA kernels (gpu_kernels.FORWARD / BACKWARD)

    def forward(self, z: Any, out: Any = None) -> Any:
        raise NotImplementedError

    def backward(self, grad_a: Any, z: Any, a: Any, out: Any = None) -> Any:
        raise NotImplementedError

    def forward_biased(self, z: Any, bias: Any, out: Any = None, fused: bool = False) -> Any:
        """activation(z + bias) for z (N, F) and bias (F,); z is overwritten with z + bias.
        `fused` (training): an activation may use a one-pass CPU kernel (cpu_kernels).
        On CuPy arrays one fused CUDA kernel (gpu_kernels) does both."""
        if self.gpu_fused and not isinstance(z, np.ndarray):
            from worker.engine import gpu_kernels  # noqa: PLC0415  (imports CuPy on first launch)

            return gpu_kernels.bias_act(z, bias, self.name, out)
        z += bias
        return self.forward(z, out=out)

    def backward_bias(self, grad_a: Any, z: Any, a: Any, out: Any, grad_bias: Any, ones: Any) -> Any:
        """`backward` for (N, F) arrays, and the bias gradient (column sums of dz) into grad_bias
        (F,); `ones` is an (N,) vector of ones (the sum as one matrix-vector product).
        On CuPy arrays one fused CUDA kernel (gpu_kernels) does both."""
        if self.gpu_fused and not isinstance(a, np.ndarray) and a.ndim == 2:
            from worker.engine import gpu_kernels  # noqa: PLC0415

            if not grad_a.flags.c_contiguous:  # the kernel indexes rows: a contiguous copy, in place
                grad_a = out = grad_a.copy()
            return gpu_kernels.act_backward_bias(grad_a, a, z, self.name, out, grad_bias)
        dz = self.backward(grad_a, z, a, out=out)
        xp_of(dz).matmul(ones, dz, out=grad_bias)
        return dz


class Linear(Activation):
    name = "linear"

    def forward(self, z, out=None):
        if out is None or out is z:
            return z
        out[...] = z
        return out

    def backward(self, grad_a, z, a, out=None):
        if out is None or out is grad_a:
            return grad_a
        out[...] = grad_a
        return out


class ReLU(Activation):
    name, init = "relu", "he"
    _zeros_row: Any = None  # (F,) zeros matching the last input axis, cached per instance

    def forward(self, z, out=None):
        xp = xp_of(z)
        if z.ndim != 2:
            return xp.maximum(z, 0, out=out)
        # against a broadcast zeros row NumPy takes its vectorised loop: 2-3x faster than
        # against the scalar 0 for a (128, 256) batch (same result, bit for bit)
        zeros = self._zeros_row
        if zeros is None or zeros.shape[0] != z.shape[1] or zeros.dtype != z.dtype or xp_of(zeros) is not xp:
            zeros = self._zeros_row = xp.zeros(z.shape[1], z.dtype)
        return xp.maximum(z, zeros, out=out)

    def backward(self, grad_a, z, a, out=None):
        return xp_of(a).multiply(grad_a, a > 0, out=out)

    # On NumPy the bias and the activation (or its derivative and the bias gradient) are one
    # pass (cpu_kernels) instead of two or three; on CuPy the base class's CUDA kernels.
    def forward_biased(self, z, bias, out=None, fused=False):
        if not fused or not isinstance(z, np.ndarray) or (out is not None and out is not z):
            return super().forward_biased(z, bias, out)
        from worker.engine import cpu_kernels  # noqa: PLC0415

        cpu_kernels.bias_relu(z, bias)
        return z

    def backward_bias(self, grad_a, z, a, out, grad_bias, ones):
        if not isinstance(a, np.ndarray) or out is not grad_a:
            return super().backward_bias(grad_a, z, a, out, grad_bias, ones)
        from worker.engine import cpu_kernels  # noqa: PLC0415

        cpu_kernels.relu_backward_bias(grad_a, a, grad_bias)
        return grad_a


class LeakyReLU(Activation):
    name, init = "leaky_relu", "he"

    def forward(self, z, out=None):
        xp = xp_of(z)
        return xp.maximum(z, z * LEAKY_SLOPE, out=out)

    def backward(self, grad_a, z, a, out=None):
        xp = xp_of(a)
        slope = xp.where(a > 0, 1.0, LEAKY_SLOPE).astype(a.dtype, copy=False)
        return xp.multiply(grad_a, slope, out=out)


class ELU(Activation):
    name, init = "elu", "he"

    def forward(self, z, out=None):
        xp = xp_of(z)
        neg = xp.expm1(xp.minimum(z, 0)) * ELU_ALPHA
        return xp.where(z > 0, z, neg) if out is None else _assign(out, xp.where(z > 0, z, neg))

    def backward(self, grad_a, z, a, out=None):
        xp = xp_of(a)  # d/dz: 1 for z > 0, alpha*exp(z) = a + alpha otherwise
        deriv = xp.where(a > 0, 1.0, a + ELU_ALPHA).astype(a.dtype, copy=False)
        return xp.multiply(grad_a, deriv, out=out)


class Sigmoid(Activation):
    name = "sigmoid"

    def forward(self, z, out=None):
        return sigmoid(z, out=out)

    def backward(self, grad_a, z, a, out=None):
        xp = xp_of(a)
        return xp.multiply(grad_a, a * (1 - a), out=out)


class Tanh(Activation):
    name = "tanh"

    def forward(self, z, out=None):
        return xp_of(z).tanh(z, out=out)

    def backward(self, grad_a, z, a, out=None):
        xp = xp_of(a)
        return xp.multiply(grad_a, 1 - a * a, out=out)


class GELU(Activation):
    """x * Phi(x) with the exact (erf) normal CDF, as torch.nn.GELU()."""

    name, init, needs_z = "gelu", "he", True

    def forward(self, z, out=None):
        return xp_of(z).multiply(z, 0.5 * (1 + _erf(z * _SQRT_HALF)), out=out)

    def backward(self, grad_a, z, a, out=None):
        xp = xp_of(z)
        cdf = 0.5 * (1 + _erf(z * _SQRT_HALF))
        pdf = xp.exp(-0.5 * z * z) * _INV_SQRT_2PI
        return xp.multiply(grad_a, cdf + z * pdf, out=out)


class Softplus(Activation):
    """log(1 + exp(z)), computed stably as max(z, 0) + log1p(exp(-|z|))."""

    name = "softplus"

    def forward(self, z, out=None):
        xp = xp_of(z)
        value = xp.maximum(z, 0) + xp.log1p(xp.exp(-xp.abs(z)))
        return value if out is None else _assign(out, value)

    def backward(self, grad_a, z, a, out=None):
        xp = xp_of(a)  # sigmoid(z) = 1 - exp(-a)
        return xp.multiply(grad_a, -xp.expm1(-a), out=out)


class Softmax(Activation):
    """Softmax over the last axis. Networks fuse it with cross_entropy; this backward is the
    general Jacobian-vector product for other losses: a * (g - sum(g * a))."""

    name, gpu_fused = "softmax", False

    def forward(self, z, out=None):
        xp = xp_of(z)
        shifted = z - z.max(axis=-1, keepdims=True)
        e = xp.exp(shifted, out=shifted)
        e /= e.sum(axis=-1, keepdims=True)
        return e if out is None else _assign(out, e)

    def backward(self, grad_a, z, a, out=None):
        xp = xp_of(a)
        inner = (grad_a * a).sum(axis=-1, keepdims=True)
        return xp.multiply(a, grad_a - inner, out=out)


def sigmoid(z: Any, out: Any = None) -> Any:
    """Numerically stable logistic function (no overflow for large |z|)."""
    xp = xp_of(z)
    e = xp.exp(-xp.abs(z))
    value = xp.where(z >= 0, 1 / (1 + e), e / (1 + e)).astype(z.dtype, copy=False)
    return value if out is None else _assign(out, value)


def _assign(out: Any, value: Any) -> Any:
    out[...] = value
    return out


_REGISTRY: dict[str, type[Activation]] = {
    cls.name: cls for cls in (Linear, ReLU, LeakyReLU, ELU, Sigmoid, Tanh, GELU, Softplus, Softmax)
}


def get_activation(name: str | None) -> Activation:
    """A (stateless) activation by spec name; None means linear."""
    try:
        return _REGISTRY[name or "linear"]()
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; known: {list(ACTIVATIONS)}") from None


def initial_weight(rng: np.random.Generator, shape: tuple[int, ...], fan_in: int, fan_out: int,
                   activation: str | None, dtype: Any) -> np.ndarray:
    """Host-side initial weights: He normal for the ReLU family, Glorot uniform otherwise."""
    if get_activation(activation).init == "he":
        return (rng.standard_normal(shape) * math.sqrt(2.0 / fan_in)).astype(dtype)
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, size=shape).astype(dtype)
