"""The training step on a GPU (CuPy): few launches, no allocation per step, no host sync.

    gpu = GpuStep(net, batch_size)             # once per fit: buffers, chunk table, accumulators
    sums = gpu.new_sums()                       # per epoch: device accumulators, zeroed
    xb, yb = gpu.batch(X, y, order, start, stop)  # one gather launch into preallocated buffers
    gpu.step(xb, yb, lr, sums, clip)            # forward, fused loss, backward, fused update

Per step: the layers' products (cuBLAS) and fused bias+activation kernels (activations.py
dispatches to gpu_kernels on CuPy arrays), one loss kernel that adds the loss and the correct
count straight into the epoch's float64 accumulator, and one optimizer launch over the flat
buffer writing the squared gradient norms, then one launch folding them into the epoch's norm
sums. The accumulator is read once per epoch (training._Loop._epoch). Losses without a kernel
(mse, mae, huber) and the l2 term go through their array formulation, still on the device.
"""
from __future__ import annotations

from typing import Any

from worker.engine import gpu_kernels, gpu_optim


class GpuStep:
    def __init__(self, net: Any, batch_size: int) -> None:
        self.net, self.xp = net, net.xp
        self.table = gpu_optim.chunk_table(net.flat_bounds, self.xp)
        self.n_params = len(net.flat_bounds) - 1
        self.squares = self.xp.zeros(self.n_params, "float64")
        self.batch_size = batch_size
        self._xb: Any = None
        self._yb: Any = None

    def new_sums(self) -> dict[str, Any]:
        """The epoch's sums on the device: acc[0] the loss times rows, acc[1] the correct count."""
        acc = self.xp.zeros(2, "float64")
        loss, correct = (acc[k:k + 1].reshape(()) for k in (0, 1))  # 0-d views, read once per epoch
        return {"acc": acc, "loss": loss, "correct": correct, "steps": 0,
                "norms": self.xp.zeros(self.n_params, "float64"), "squares": self.squares}

    def batch(self, X: Any, y: Any, order: Any, start: int, stop: int) -> tuple[Any, Any]:
        """Rows order[start:stop] gathered into the reused buffers (the fit loop slices unshuffled
        epochs itself)."""
        if self._xb is None:
            self._xb = self.xp.empty((self.batch_size, *X.shape[1:]), X.dtype)
            self._yb = self.xp.empty((self.batch_size, *y.shape[1:]), y.dtype)
        return gpu_kernels.gather_rows(X, y, order, start, self._xb[:stop - start], self._yb[:stop - start])

    def _loss(self, out: Any, yb: Any, acc: Any) -> Any:
        """The loss gradient; adds loss * rows (and the correct count) to acc."""
        loss, m = self.net.loss, out.shape[0]
        if loss.name == "cross_entropy" and out.ndim == 2:
            grad = loss._grad_buffer(out)
            gpu_kernels.softmax_cross_entropy(out, yb, grad, acc, 1.0)
            return grad
        if loss.name == "binary_cross_entropy":
            grad = loss._grad_buffer(out)
            y = yb.reshape(out.shape)
            gpu_kernels.sigmoid_cross_entropy(out, y, grad, acc, m / out.size)
            return grad
        value, grad, correct = loss.value_grad_correct(out, yb)
        acc[0] += value * m
        if correct is not None:
            acc[1] += correct
        return grad

    def step(self, xb: Any, yb: Any, lr: float, sums: dict[str, Any], clip: float | None) -> None:
        net, acc = self.net, sums["acc"]
        grad = self._loss(net.forward(xb, True), yb, acc)
        grads = net.backward(grad)
        if net.spec["l2"]:
            acc[0] += net.add_l2(grads, 0.0) * xb.shape[0]
        gpu_optim.step(net.train_state.optimizer, net.flat_grads, lr, self.table, self.squares, clip)
        gpu_optim.finish_norms(self.squares, sums["norms"])
        sums["steps"] += 1
