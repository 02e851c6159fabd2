"""GpuStep (the fit loop's step on a GPU) on NumPy arrays, with each CUDA kernel it launches
replaced by the NumPy reference it is tested against on a GPU (test_gpu_kernels): a whole epoch
then equals the CPU fit loop's record (loss, accuracy, gradient norms) and weights. This checks
the orchestration (accumulators, scales, norms, clipping, l2, the gather) without CuPy."""
from __future__ import annotations

import numpy as np
import pytest

from worker.engine import Network, gpu_kernels, gpu_optim, gpu_step, training
from worker.engine.losses import get_loss


def _reference_kernels(monkeypatch, bounds: np.ndarray) -> None:
    def loss_kernel(name):
        def launch(logits, y, grad, acc, scale):
            value, ref_grad, correct = gpu_kernels.reference_loss(get_loss(name), logits, y)
            grad[...] = ref_grad
            acc[0] += value * scale * (logits.shape[0] if name == "cross_entropy" else logits.size)
            acc[1] += correct
        return launch

    def gather_rows(X, y, perm, start, xb, yb):
        m = xb.shape[0]
        xb[...], yb[...] = X[perm[start:start + m]], y[perm[start:start + m]]
        return xb, yb

    def optimizer_step(optimizer, flat_grads, lr, table, squares, clip):
        squares += gpu_optim.reference_step(optimizer, flat_grads, lr, bounds, clip)

    def finish_norms(squares, norms):
        norms += np.sqrt(squares)
        squares[...] = 0

    monkeypatch.setattr(gpu_kernels, "softmax_cross_entropy", loss_kernel("cross_entropy"))
    monkeypatch.setattr(gpu_kernels, "sigmoid_cross_entropy", loss_kernel("binary_cross_entropy"))
    monkeypatch.setattr(gpu_kernels, "gather_rows", gather_rows)
    monkeypatch.setattr(gpu_optim, "step", optimizer_step)
    monkeypatch.setattr(gpu_optim, "finish_norms", finish_norms)


@pytest.mark.parametrize("loss", ["cross_entropy", "binary_cross_entropy", "mse"])
def test_an_epoch_of_gpu_steps_with_reference_kernels_equals_the_cpu_fit(monkeypatch, loss):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(100, 6))
    y = rng.integers(0, 3, 100) if loss == "cross_entropy" else (rng.random((100, 2)) > 0.5).astype(float)
    spec = {"layers": [{"type": "dense", "units": 8, "activation": "tanh"},
                       {"type": "dense", "units": 3 if loss == "cross_entropy" else 2,
                        "activation": {"cross_entropy": "softmax", "binary_cross_entropy": "sigmoid"}.get(loss, "linear")}],
            "loss": loss, "epochs": 1, "batch_size": 32, "l2": 0.01, "gradient_clip_norm": 0.5,
            "optimizer": {"type": "adam", "learning_rate": 0.01}, "dtype": "float64", "seed": 3}
    cpu = Network.from_spec(spec, input_shape=(6,), device="cpu")
    record = cpu.fit(X, y).epochs[0]

    net = Network.from_spec(spec, input_shape=(6,), device="cpu")
    _reference_kernels(monkeypatch, net.flat_bounds)
    net.train_state = training.new_train_state(net)
    step, Xd, yd = gpu_step.GpuStep(net, 32), net.inputs(X), net.targets(y)
    sums, order = step.new_sums(), np.random.default_rng([net.seed, 1]).permutation(100)
    for start in range(0, 100, 32):
        xb, yb = step.batch(Xd, yd, order, start, min(start + 32, 100))
        step.step(xb, yb, 0.01, sums, 0.5)
    assert float(sums["loss"]) / 100 == pytest.approx(record["loss"], rel=1e-10)
    if loss != "mse":
        assert float(sums["correct"]) / 100 == pytest.approx(record["accuracy"], rel=1e-12)
    norms = sums["norms"] / sums["steps"]
    assert norms == pytest.approx(list(record["grad_norms"].values()), rel=1e-10)
    np.testing.assert_allclose(net.flat_params, cpu.flat_params, rtol=1e-10)
