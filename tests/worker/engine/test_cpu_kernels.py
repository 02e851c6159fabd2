"""The fused CPU kernels give what the NumPy formulations they replace give (those still run
on CuPy), with the gradient norms of the same pass, and let NaN through to the loss."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from worker.engine import cpu_kernels
from worker.engine import cpu_optimizer_steps as steps
from worker.engine.losses import get_loss
from worker.engine.optimizers import make_optimizer
from tests.worker.engine.test_optimizers import CASES
from worker.engine.spec import OPTIMIZER_SPECS

FUSABLE = [case for case in CASES if case["type"] in ("sgd", "adam", "adamw")]
TOLERANCE = {np.float32: {"rtol": 2e-5, "atol": 1e-6}, np.float64: {"rtol": 1e-12, "atol": 1e-14}}

pytestmark = pytest.mark.usefixtures("kernel_variant")  # each test on the serial and the parallel kernels


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("raw", FUSABLE, ids=lambda c: "-".join(str(v) for v in c.values()))
def test_fused_step_equals_the_array_step_and_reports_squared_norms(raw, dtype):
    cfg, rng = OPTIMIZER_SPECS[raw["type"]].model_validate(raw).model_dump(), np.random.default_rng(5)
    sizes = [12, 3, 40, 1]
    bounds = np.cumsum([0, *sizes])
    start = rng.standard_normal(bounds[-1]).astype(dtype)
    flat_a, flat_b = start.copy(), start.copy()
    pieces = list(enumerate(zip(bounds[:-1], bounds[1:])))  # one named view per bounds entry, as Network's
    fused, plain = (make_optimizer(cfg, {f"p{k}": flat[a:b] for k, (a, b) in pieces}, flat=flat)
                    for flat in (flat_a, flat_b))
    assert fused.fusable
    squares = np.empty(len(sizes))
    for _ in range(4):
        g = rng.standard_normal(bounds[-1]).astype(dtype)
        fused.fused_step(g.copy(), cfg["learning_rate"], bounds, squares)
        plain.step(None, cfg["learning_rate"], flat_grads=g.copy())
        expected = [float(np.dot(g[a:b].astype(np.float64), g[a:b])) for a, b in zip(bounds[:-1], bounds[1:])]
        np.testing.assert_allclose(squares, expected, rtol=1e-5 if dtype is np.float32 else 1e-12)
    assert flat_a.dtype == dtype
    np.testing.assert_allclose(flat_a, flat_b, **TOLERANCE[dtype])
    for key, value in plain.state_arrays().items():
        np.testing.assert_allclose(fused.state_arrays()[key], value, **TOLERANCE[dtype], err_msg=key)


@pytest.mark.parametrize("raw", [{"type": "rmsprop"}, {"type": "adagrad"}])
def test_optimizers_without_a_kernel_say_so(raw):
    cfg = OPTIMIZER_SPECS[raw["type"]].model_validate(raw).model_dump()
    assert not make_optimizer(cfg, {"p": np.zeros(2)}, flat=np.zeros(2)).fusable


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


def test_sgd_kernel_lets_nan_reach_the_parameters():
    p, buf, squares = np.ones(4, np.float32), np.zeros(4, np.float32), np.empty(1)
    g = np.array([1, np.nan, 1, 1], np.float32)
    steps.sgd_step(p, g, buf, np.float32(0.1), np.float32(0.9), False, np.array([0, 4]), squares,
                   steps.part_sums(1))
    assert np.isnan(squares[0]) and np.isnan(p[1]) and p[0] == pytest.approx(0.9)


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


def test_kernels_compile_without_a_writable_cache():
    out = run_python(
        "import numba; real = numba.njit\n"
        "def njit(*args, **kwargs):\n"
        "    if kwargs.get('cache'):\n"
        "        raise RuntimeError('cannot cache function: no locator available')\n"
        "    return real(*args, **kwargs)\n"
        "numba.njit = njit\n"
        "from worker.engine import cpu_kernels; cpu_kernels.warm_up(threads=1); print('compiled')")
    assert out.strip() == "compiled"


def _step_arrays(dtype, sizes):
    rng = np.random.default_rng(9)
    bounds = np.cumsum([0, *sizes])
    return bounds, [rng.standard_normal(bounds[-1]).astype(dtype) for _ in range(4)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("parts", [2, 3])
@pytest.mark.parametrize("kind", ["sgd", "nesterov", "adam"])
def test_parallel_step_equals_the_serial_one(kind, parts, dtype):
    """Parameters and state bit for bit (each element's update is the same arithmetic); the squared
    norms to rounding only: the parallel step sums each part's piece of a parameter in the
    gradient's dtype and adds the pieces in float64, the serial one sums the whole parameter in
    the gradient's dtype. The part sums' scratch starts as NaN (reused, it holds the last step's):
    a part that holds no piece of a parameter must write its zero."""
    from worker.engine import kernel_jit  # noqa: PLC0415

    bounds, (p, g, s1, s2) = _step_arrays(dtype, [1000, 3, 2047, 1, 130])
    runs = {}
    previous = kernel_jit.use_threads(2)  # both Numba threads run the parts
    try:
        for name, k, cut in (("serial", 0, 1), ("parallel", 1, parts)):  # the serial step: one part
            state, squares, d = [a.copy() for a in (p, s1, s2)], np.full(bounds.size - 1, np.nan), dtype
            sums = np.full((cut, bounds.size - 1), np.nan)
            if kind == "adam":
                pair = np.array([0.9, 0.1], dtype)
                steps._ADAM[k](*state[:1], g, *state[1:], d(0.99), pair, pair, d(0.01), d(1.2), d(1e-8), bounds,
                               sums, squares)
            else:
                steps._SGD[k](state[0], g, state[1], d(0.01), d(0.9), kind == "nesterov", bounds, sums, squares)
            runs[name] = state, squares
    finally:
        kernel_jit.use_threads(previous)
    for serial, parallel in zip(runs["serial"][0], runs["parallel"][0]):
        np.testing.assert_array_equal(parallel, serial)
    np.testing.assert_allclose(runs["parallel"][1], runs["serial"][1], rtol=1e-5 if dtype is np.float32 else 1e-13)


@pytest.mark.parametrize("kind", ["sgd", "adam"])
def test_the_parallel_step_runs_from_four_threads_counting_every_array_it_streams(kind, monkeypatch):
    """A parameter count below kernel_jit.PARALLEL_MIN whose arrays together reach it (SGD with
    momentum streams three, Adam four) takes the parallel step from PARALLEL_MIN_THREADS threads,
    the serial one on 2 threads."""
    from worker.engine import kernel_jit  # noqa: PLC0415

    monkeypatch.setattr(kernel_jit, "PARALLEL_MIN", 3_000)
    monkeypatch.setattr(kernel_jit, "PARALLEL_MIN_THREADS", 4)
    calls = []
    name, pair = ("_SGD", steps._SGD) if kind == "sgd" else ("_ADAM", steps._ADAM)
    monkeypatch.setattr(steps, name, tuple(
        lambda *args, k=k, kernel=kernel: (calls.append(k), kernel(*args)) for k, kernel in enumerate(pair)))
    bounds, (p, g, m, v) = _step_arrays(np.float32, [999, 1])
    one, pair_ = np.float32(0.5), np.array([0.9, 0.1], np.float32)
    previous = kernel_jit.use_threads(2)
    try:
        for threads in (2, 4):
            kernel_jit.use_threads(threads)
            if kind == "sgd":
                steps.sgd_step(p, g, m, one, one, False, bounds, np.empty(2), steps.part_sums(2))
            else:
                steps.adam_step(p, g, m, v, one, pair_, pair_, one, one, one, bounds, np.empty(2),
                                steps.part_sums(2))
    finally:
        kernel_jit.use_threads(previous)
    assert calls == [0, 1]


def test_an_optimizer_keeps_one_part_sums_buffer_across_steps_and_checks_its_width():
    """The fused step's scratch is made once per optimizer (a column per parameter), not per step;
    a buffer for another parameter count is refused, and so are bounds for more parameters than
    squares and part sums hold (the kernels loop over the bounds; Numba would write past either)."""
    cfg = OPTIMIZER_SPECS["adam"].model_validate({"type": "adam", "learning_rate": 0.01}).model_dump()
    flat = np.zeros(6, np.float32)
    opt = make_optimizer(cfg, {"a": flat[:4], "b": flat[4:]}, flat=flat)
    bounds, squares = np.array([0, 4, 6]), np.empty(2)
    opt.fused_step(np.ones(6, np.float32), 0.01, bounds, squares)
    kept = opt._part_sums
    opt.fused_step(np.ones(6, np.float32), 0.01, bounds, squares)
    assert opt._part_sums is kept and kept.shape[1] == 2
    np.testing.assert_array_equal(squares, [4.0, 2.0])
    with pytest.raises(ValueError, match="part sums for 3$"):
        steps.sgd_step(flat, np.ones(6, np.float32), flat.copy(), np.float32(0.1), np.float32(0), False, bounds,
                       squares, steps.part_sums(3))
    with pytest.raises(ValueError, match="bounds for 3 parameters, squares for 2"):
        steps.sgd_step(flat, np.ones(6, np.float32), flat.copy(), np.float32(0.1), np.float32(0), False,
                       np.array([0, 2, 4, 6]), squares, steps.part_sums(2))


@pytest.mark.parametrize(("threads", "job_threads", "parallel"), [(2, 16, False), (4, 1, True), (None, 2, False),
                                                                  (None, 4, True)])
def test_warm_up_compiles_the_parallel_variants_only_for_a_budget_that_runs_them(threads, job_threads, parallel,
                                                                                 monkeypatch):
    """From kernel_jit.PARALLEL_MIN_THREADS threads (given, or a worker job's share by default)
    every variant; below, the serial ones only (spies: nothing compiles)."""
    from worker.engine import cpu_conv, cpu_gather, cpu_recurrent, kernel_jit, spin  # noqa: PLC0415
    from worker.engine import threads as thread_policy  # noqa: PLC0415

    monkeypatch.setattr(kernel_jit, "PARALLEL_MIN_THREADS", 4)
    monkeypatch.setattr(thread_policy, "configured_threads", lambda: None)
    monkeypatch.setattr(thread_policy, "job_threads", lambda: job_threads)
    called = set()
    for name in ("_SOFTMAX_SHIFT", "_SOFTMAX_FINISH", "_BIAS_RELU", "_RELU_BACKWARD_BIAS"):
        monkeypatch.setattr(cpu_kernels, name, tuple(lambda *_, k=k: called.add(k) for k in (0, 1)))
    monkeypatch.setattr(spin, "warm_up", lambda: None)
    modules = (cpu_gather, steps, cpu_conv, cpu_recurrent)
    for module in modules:
        monkeypatch.setattr(module, "warm_up", lambda _dtype, variants, m=module: called.add((m, variants)))
    cpu_kernels.warm_up(np.float32, threads)
    variants = 2 if parallel else 1
    assert called == {*range(variants), *((module, variants) for module in modules)}
