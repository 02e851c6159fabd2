"""Losses with mean reduction, as PyTorch: value and gradient w.r.t. the network output.

    loss = get_loss("cross_entropy")
    value, grad = loss.value_and_grad(out, y)   # out (N, K); grad (N, K), a reused buffer
    value = loss.value(out, y)

cross_entropy takes the logits (the softmax output layer runs linear in training) and integer
class targets (N,): log-sum-exp, gradient (softmax - onehot) / N, like nn.CrossEntropyLoss.
binary_cross_entropy takes logits and 0/1 targets of the output's shape (or (N,) for one
unit), like nn.BCEWithLogitsLoss. mse, mae, huber (delta 1) average over every element.
`value` returns a 0-d xp array (no host sync); the caller converts when it needs a float.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from worker.engine.activations import sigmoid, xp_of

HUBER_DELTA = 1.0


class Loss:
    name = ""
    from_logits = False
    output_activation = None  # the activation the output layer applies at prediction when fused

    def __init__(self) -> None:
        self._grad: Any = None

    def _grad_buffer(self, out: Any) -> Any:
        if self._grad is None or self._grad.shape[0] < out.shape[0] or self._grad.shape[1:] != out.shape[1:]:
            self._grad = xp_of(out).empty(out.shape, out.dtype)
        return self._grad[: out.shape[0]]

    def value(self, out: Any, y: Any) -> Any:
        raise NotImplementedError

    def value_and_grad(self, out: Any, y: Any) -> tuple[Any, Any]:
        raise NotImplementedError

    def correct(self, out: Any, y: Any) -> Any:
        """Number of correct predictions (classification losses only), a 0-d xp array."""
        raise NotImplementedError

    def value_grad_correct(self, out: Any, y: Any) -> tuple[Any, Any, Any]:
        """(value, grad, correct) for a training step; correct is None for regression losses."""
        value, grad = self.value_and_grad(out, y)
        return value, grad, (self.correct(out, y) if self.from_logits else None)


def _match(out: Any, y: Any) -> Any:
    """Targets reshaped to the output's shape ((N,) targets for a single output column)."""
    return y.reshape(out.shape) if y.shape != out.shape else y


class MSE(Loss):
    name = "mse"

    def value(self, out, y):
        diff = out - _match(out, y)
        return (diff * diff).mean()

    def value_and_grad(self, out, y):
        grad = self._grad_buffer(out)
        xp_of(out).subtract(out, _match(out, y), out=grad)
        value = (grad * grad).mean()
        grad *= 2.0 / grad.size
        return value, grad


class MAE(Loss):
    name = "mae"

    def value(self, out, y):
        return xp_of(out).abs(out - _match(out, y)).mean()

    def value_and_grad(self, out, y):
        xp, grad = xp_of(out), self._grad_buffer(out)
        xp.subtract(out, _match(out, y), out=grad)
        value = xp.abs(grad).mean()
        xp.sign(grad, out=grad)
        grad *= 1.0 / grad.size
        return value, grad


class Huber(Loss):
    name = "huber"

    def value(self, out, y):
        xp = xp_of(out)
        r = xp.abs(out - _match(out, y))
        return xp.where(r <= HUBER_DELTA, 0.5 * r * r, HUBER_DELTA * (r - 0.5 * HUBER_DELTA)).mean()

    def value_and_grad(self, out, y):
        xp, grad = xp_of(out), self._grad_buffer(out)
        xp.subtract(out, _match(out, y), out=grad)
        value = self.value(out, y)
        xp.clip(grad, -HUBER_DELTA, HUBER_DELTA, out=grad)
        grad *= 1.0 / grad.size
        return value, grad


class CrossEntropy(Loss):
    name, from_logits, output_activation = "cross_entropy", True, "softmax"

    def __init__(self) -> None:
        super().__init__()
        self._row_starts: Any = None
        self._row_k = 0

    def _log_softmax_parts(self, logits: Any) -> tuple[Any, Any]:
        xp = xp_of(logits)
        shifted = logits - logits.max(axis=1, keepdims=True)
        sum_exp = xp.exp(shifted).sum(axis=1)
        return shifted, sum_exp

    def value(self, out, y):
        xp = xp_of(out)
        shifted, sum_exp = self._log_softmax_parts(out)
        picked = xp.take_along_axis(shifted, y.reshape(-1, 1), axis=1)
        return (xp.log(sum_exp) - picked.reshape(-1)).mean()

    def _target_index(self, y: Any, n: int, k: int) -> Any:
        """Flat indices (N,) of each row's target logit in a C-contiguous (N, K) array."""
        xp = xp_of(y)
        if self._row_starts is None or self._row_starts.shape[0] < n or self._row_k != k:
            self._row_starts, self._row_k = xp.arange(n) * k, k
        return self._row_starts[:n] + y

    def value_grad_correct(self, out, y):
        """On NumPy one fused loop (cpu_kernels), on CuPy one fused kernel (gpu_kernels); the
        array formulation below for other ranks (and as their reference)."""
        if out.ndim == 2 and not isinstance(out, np.ndarray):
            return _gpu_loss(self, "softmax_cross_entropy", out, y, 1.0 / out.shape[0])
        if xp_of(out) is not np or out.ndim != 2:
            value, grad = self.array_value_and_grad(out, y)
            return value, grad, self.correct(out, y)
        from worker.engine import cpu_kernels  # noqa: PLC0415  (Numba: only where training runs)

        grad = self._grad_buffer(out)
        value, correct = cpu_kernels.softmax_cross_entropy(out, y, grad, out.dtype.type(1.0 / out.shape[0]))
        return np.asarray(value, out.dtype), grad, correct

    def value_and_grad(self, out, y):
        value, grad, _ = self.value_grad_correct(out, y)
        return value, grad

    def array_value_and_grad(self, out, y):
        """Softmax-CE on logits in few passes: grad = (softmax - onehot) / N, written in place."""
        xp, grad, n = xp_of(out), self._grad_buffer(out), out.shape[0]
        xp.subtract(out, out.max(axis=1, keepdims=True), out=grad)
        flat, target = grad.reshape(-1), self._target_index(y, n, out.shape[1])
        picked = flat[target]
        xp.exp(grad, out=grad)
        sum_exp = grad.sum(axis=1, keepdims=True)
        value = (xp.log(sum_exp).reshape(-1) - picked).mean()
        xp.multiply(grad, xp.reciprocal(sum_exp * n), out=grad)
        flat[target] -= 1.0 / n
        return value, grad

    def correct(self, out, y):
        return (out.argmax(axis=1) == y).sum()


class BinaryCrossEntropy(Loss):
    name, from_logits, output_activation = "binary_cross_entropy", True, "sigmoid"

    def value(self, out, y):
        xp = xp_of(out)
        y = _match(out, y)
        return (xp.maximum(out, 0) - out * y + xp.log1p(xp.exp(-xp.abs(out)))).mean()

    def value_and_grad(self, out, y):
        grad = self._grad_buffer(out)
        value = self.value(out, y)
        sigmoid(out, out=grad)
        grad -= _match(out, y)
        grad *= 1.0 / grad.size
        return value, grad

    def correct(self, out, y):
        return ((out > 0) == (_match(out, y) > 0.5)).sum() / (out.size // out.shape[0])

    def value_grad_correct(self, out, y):
        if isinstance(out, np.ndarray):
            return super().value_grad_correct(out, y)
        return _gpu_loss(self, "sigmoid_cross_entropy", out, _match(out, y), 1.0 / out.size)


def _gpu_loss(loss: Loss, kernel: str, out: Any, y: Any, scale: float) -> tuple[Any, Any, Any]:
    """(value, grad, correct) by one fused CUDA kernel (gpu_kernels), all on the device."""
    from worker.engine import gpu_kernels  # noqa: PLC0415  (CuPy: only where a GPU trains)

    acc, grad = xp_of(out).zeros(2, np.float64), loss._grad_buffer(out)
    getattr(gpu_kernels, kernel)(out, y, grad, acc, scale)
    return acc[0].astype(out.dtype), grad, acc[1]


_LOSSES = {cls.name: cls for cls in (MSE, MAE, Huber, CrossEntropy, BinaryCrossEntropy)}


def get_loss(name: str) -> Loss:
    try:
        return _LOSSES[name]()
    except KeyError:
        raise ValueError(f"unknown loss {name!r}; known: {sorted(_LOSSES)}") from None
