"""The fused CPU kernels give what the NumPy formulations they replace give (those still run
on CuPy) and let NaN through to the loss; the optimizer step's are in test_cpu_optimizer_steps."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from worker.engine import cpu_kernels
from worker.engine.losses import get_loss

TOLERANCE = {np.float32: {"rtol": 2e-5, "atol": 1e-6}, np.float64: {"rtol": 1e-12, "atol": 1e-14}}

pytestmark = pytest.mark.usefixtures("kernel_variant")  # each test on the serial and the parallel kernels


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("scale", [1.0, 30.0, 1e4])
def test_softmax_cross_entropy_equals_the_array_formulation(dtype, scale):
    rng = np.random.default_rng(6)
    logits = (rng.standard_normal((37, 7)) * scale).astype(dtype)
    logits[3, 2] = logits[3, 5] = logits[3].max() + 1  # a tie: counted as np.argmax counts it
    y = rng.integers(0, 7, 37)
    loss = get_loss("cross_entropy")
    value, grad, correct = loss.value_grad_correct(logits, y)
    grad = grad.copy()
    ref_value, ref_grad = loss.array_value_and_grad(logits, y)
    assert value.dtype == dtype and grad.dtype == dtype
    assert float(value) == pytest.approx(float(ref_value), rel=1e-6 if dtype is np.float32 else 1e-12)
    np.testing.assert_allclose(grad, ref_grad, **TOLERANCE[dtype])
    assert int(correct) == int((logits.argmax(axis=1) == y).sum())


def test_softmax_cross_entropy_lets_nan_and_inf_reach_the_loss():
    y = np.array([0, 1])
    for bad in (np.nan, np.inf):
        logits = np.array([[0.5, bad], [1.0, 2.0]], np.float32)
        value, _, _ = get_loss("cross_entropy").value_grad_correct(logits, y)
        assert not np.isfinite(value)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu_bias_kernels_equal_the_array_formulation(dtype):
    from worker.engine.activations import Activation, get_activation

    rng, relu = np.random.default_rng(7), get_activation("relu")
    z, bias = rng.standard_normal((9, 133)).astype(dtype), rng.standard_normal(133).astype(dtype)  # 3 column blocks
    z[0, 0] = np.nan
    a = relu.forward_biased(z.copy(), bias, out=None, fused=True)
    ref = Activation.forward_biased(relu, z.copy(), bias, out=None)  # the array formulation
    np.testing.assert_array_equal(a, ref)  # NaN where NaN, bit for bit elsewhere
    g = rng.standard_normal((9, 133)).astype(dtype)
    g[1, 1] = g[2, 70] = np.nan
    ones = np.ones(9, dtype)
    grad_bias, ref_bias = np.empty(133, dtype), np.empty(133, dtype)
    g_kernel = g.copy()
    dz = relu.backward_bias(g_kernel, None, a, g_kernel, grad_bias, ones)
    ref_dz = Activation.backward_bias(relu, g.copy(), None, a, None, ref_bias, ones)
    np.testing.assert_array_equal(dz, ref_dz)
    np.testing.assert_allclose(grad_bias, ref_bias, **TOLERANCE[dtype])


def test_labels_outside_the_output_units_are_refused_not_written_past():
    from worker.engine import Network

    spec = {"layers": [{"type": "dense", "units": 3, "activation": "softmax"}], "loss": "cross_entropy",
            "epochs": 1, "batch_size": 4}
    net = Network.from_spec(spec, input_shape=(2,), seed=0)
    with pytest.raises(ValueError, match=r"class labels must be in 0\.\.2"):
        net.fit(np.zeros((8, 2), np.float32), np.array([0, 1, 2, 3, 0, 1, 2, 0]))
    buffer = np.zeros(40, np.float32)
    with pytest.raises(IndexError, match="outside the output layer"):  # the kernel's own guard
        cpu_kernels.softmax_cross_entropy(np.zeros((4, 3), np.float32), np.array([0, 1, 2, 3]),
                                          buffer[:12].reshape(4, 3), np.float32(0.25))
    assert not buffer[12:].any()


def run_python(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout


def test_prediction_never_loads_numba():
    out = run_python(
        "import sys, numpy as np; from worker.engine import Network\n"
        "spec = {'layers': [{'type': 'dense', 'units': 4, 'activation': 'relu'},"
        " {'type': 'dense', 'units': 2, 'activation': 'softmax'}], 'loss': 'cross_entropy'}\n"
        "net = Network.from_spec(spec, input_shape=(3,), n_outputs=2, seed=0); net.ensure_built(np.zeros((1, 3)))\n"
        "print(net.predict(np.ones((5, 3), np.float32)).shape, 'numba' in sys.modules)")
    assert out.split() == ["(5,", "2)", "False"]


@pytest.mark.parametrize(("threads", "job_threads", "parallel"), [(2, 16, False), (4, 1, True), (None, 2, False),
                                                                  (None, 4, True)])
def test_warm_up_compiles_the_parallel_variants_only_for_a_budget_that_runs_them(threads, job_threads, parallel,
                                                                                 monkeypatch):
    """From kernel_jit.PARALLEL_MIN_THREADS threads (given, or a worker job's share by default)
    every variant; below, the serial ones only (spies: nothing compiles)."""
    from worker.engine import (  # noqa: PLC0415
        cpu_conv, cpu_gather, cpu_optimizer_steps, cpu_recurrent, kernel_jit, spin)
    from worker.engine import threads as thread_policy  # noqa: PLC0415

    monkeypatch.setattr(kernel_jit, "PARALLEL_MIN_THREADS", 4)
    monkeypatch.setattr(thread_policy, "configured_threads", lambda: None)
    monkeypatch.setattr(thread_policy, "job_threads", lambda: job_threads)
    called = set()
    for name in ("_SOFTMAX_SHIFT", "_SOFTMAX_FINISH", "_BIAS_RELU", "_RELU_BACKWARD_BIAS"):
        monkeypatch.setattr(cpu_kernels, name, tuple(lambda *_, k=k: called.add(k) for k in (0, 1)))
    monkeypatch.setattr(spin, "warm_up", lambda: None)
    modules = (cpu_gather, cpu_optimizer_steps, cpu_conv, cpu_recurrent)
    for module in modules:
        monkeypatch.setattr(module, "warm_up", lambda _dtype, variants, m=module: called.add((m, variants)))
    cpu_kernels.warm_up(np.float32, threads)
    variants = 2 if parallel else 1
    assert called == {*range(variants), *((module, variants) for module in modules)}
