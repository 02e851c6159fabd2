"""The optimizer step's fused CPU kernels (cpu_optimizer_steps) give what the NumPy step gives
(still run on CuPy), with the gradient norms of the same pass, the parallel step what the serial
one gives, and let NaN through to the parameters."""
from __future__ import annotations

import numpy as np
import pytest

from tests.worker.engine.test_cpu_kernels import TOLERANCE
from tests.worker.engine.test_optimizers import CASES
from worker.engine import cpu_optimizer_steps as steps
from worker.engine.optimizers import make_optimizer
from worker.engine.spec import OPTIMIZER_SPECS

FUSABLE = [case for case in CASES if case["type"] in ("sgd", "adam", "adamw")]

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


def test_sgd_kernel_lets_nan_reach_the_parameters():
    p, buf, squares = np.ones(4, np.float32), np.zeros(4, np.float32), np.empty(1)
    g = np.array([1, np.nan, 1, 1], np.float32)
    steps.sgd_step(p, g, buf, np.float32(0.1), np.float32(0.9), False, np.array([0, 4]), squares,
                   steps.part_sums(1))
    assert np.isnan(squares[0]) and np.isnan(p[1]) and p[0] == pytest.approx(0.9)


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
