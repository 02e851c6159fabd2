"""CuPy against NumPy: the same spec and seed give the same per-epoch losses (float32) and the
same gradients (float64, 1e-4 relative). The CPU gradients are themselves checked against finite
differences in the other engine tests, so agreement here is the gradient check on the GPU.
Marked `gpu`: reported as not run where there is no CUDA GPU with CuPy."""
from __future__ import annotations

import numpy as np
import pytest

from worker.engine import Network
from worker.engine.backend import to_numpy

pytestmark = pytest.mark.gpu

CASES = {
    "mlp": ((12,), [{"type": "dense", "units": 16, "activation": "tanh"}, {"type": "batchnorm"},
                    {"type": "dense", "units": 8, "activation": "gelu"}, {"type": "dense", "activation": "softmax"}]),
    "cnn": ((1, 8, 8), [{"type": "conv2d", "filters": 4, "kernel_size": 3, "padding": "same", "activation": "relu"},
                        {"type": "maxpool2d", "pool_size": 2}, {"type": "conv2d", "filters": 4, "kernel_size": 2,
                                                                "stride": 2, "activation": "elu"},
                        {"type": "avgpool2d", "pool_size": 2}, {"type": "flatten"},
                        {"type": "dense", "activation": "softmax"}]),
    "rnn": ((6, 3), [{"type": "lstm", "units": 8, "return_sequences": True}, {"type": "gru", "units": 8},
                     {"type": "dense", "activation": "softmax"}]),
}


def data(input_shape: tuple[int, ...], n: int = 96) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n, *input_shape))
    return X, (X.reshape(n, -1)[:, 0] > 0).astype(np.int64) + (X.reshape(n, -1)[:, 1] > 1)


def spec_of(layers: list, dtype: str) -> dict:
    return {"layers": layers, "loss": "cross_entropy", "optimizer": {"type": "adam", "learning_rate": 0.01},
            "epochs": 3, "batch_size": 16, "l2": 1e-3, "dtype": dtype, "gradient_clip_norm": 5.0}


@pytest.mark.parametrize("case", sorted(CASES))
def test_gradients_agree_in_float64(case: str) -> None:
    input_shape, layers = CASES[case]
    X, y = data(input_shape, 32)
    nets = {d: Network.from_spec(spec_of(layers, "float64"), input_shape=input_shape, n_outputs=3, device=d)
            for d in ("cpu", "gpu")}
    (loss_cpu, grads_cpu), (loss_gpu, grads_gpu) = (nets[d].loss_and_grads(X, y) for d in ("cpu", "gpu"))
    assert loss_gpu == pytest.approx(loss_cpu, rel=1e-10)
    for name, grad in grads_cpu.items():
        np.testing.assert_allclose(to_numpy(grads_gpu[name]), grad, rtol=1e-4, atol=1e-10, err_msg=name)


@pytest.mark.parametrize("case", sorted(CASES))
def test_epoch_losses_agree_in_float32(case: str) -> None:
    input_shape, layers = CASES[case]
    X, y = data(input_shape)
    losses = {}
    for device in ("cpu", "gpu"):
        net = Network.from_spec(spec_of(layers, "float32"), input_shape=input_shape, n_outputs=3, device=device)
        losses[device] = [e["loss"] for e in net.fit(X, y).epochs]
        assert net.device == device
    np.testing.assert_allclose(losses["gpu"], losses["cpu"], rtol=2e-3)
