"""lstm and gru training on NumPy (cpu_recurrent's backward kernels) equal the array formulation
(the layers with `use_kernels` off, as CuPy runs them), NaN included, on the serial and the
parallel kernels; and they pass finite differences."""
from __future__ import annotations

import numpy as np
import pytest

from tests.worker.engine.layer_helpers import build_layer, check_layer_grads

pytestmark = pytest.mark.usefixtures("kernel_variant")
TOLERANCE = {np.float32: {"rtol": 2e-5, "atol": 1e-6}, np.float64: {"rtol": 1e-11, "atol": 1e-13}}


def run(layer, x, upstream):
    out = layer.forward(x.copy(), True).copy()
    dx = layer.backward(upstream.copy(), True).copy()
    return out, dx, {name: grad.copy() for name, grad in layer.grads.items()}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("return_sequences", [False, True])
@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_backward_kernels_equal_the_array_formulation(kind, return_sequences, dtype):
    config = {"type": kind, "units": 6, "return_sequences": return_sequences}
    layers = [build_layer(config, (5, 3), dtype=dtype) for _ in range(2)]
    layers[1].use_kernels = False
    rng = np.random.default_rng(8)
    x = rng.standard_normal((4, 5, 3)).astype(dtype)
    upstream = rng.standard_normal((4, *layers[0].out_shape)).astype(dtype)
    for _ in range(2):  # the second batch reuses the buffers
        (out, dx, grads), (ref_out, ref_dx, ref_grads) = run(layers[0], x, upstream), run(layers[1], x, upstream)
        np.testing.assert_allclose(out, ref_out, **TOLERANCE[dtype])  # the LSTM's cell update is a kernel
        np.testing.assert_allclose(dx, ref_dx, **TOLERANCE[dtype])
        for name, grad in ref_grads.items():
            np.testing.assert_allclose(grads[name], grad, **TOLERANCE[dtype], err_msg=name)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_a_nan_reaches_the_gradients_as_in_the_array_formulation(kind):
    layers = [build_layer({"type": kind, "units": 4}, (3, 2)) for _ in range(2)]
    layers[1].use_kernels = False
    x = np.random.default_rng(9).standard_normal((2, 3, 2))
    x[1, 1, 0] = np.nan
    upstream = np.ones((2, 4))
    (_, dx, grads), (_, ref_dx, ref_grads) = run(layers[0], x, upstream), run(layers[1], x, upstream)
    np.testing.assert_array_equal(np.isnan(dx), np.isnan(ref_dx))
    np.testing.assert_allclose(dx, ref_dx, rtol=1e-11)
    for name, grad in ref_grads.items():
        np.testing.assert_array_equal(np.isnan(grads[name]), np.isnan(grad), err_msg=name)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_backward_kernels_pass_finite_differences(kind):
    layer = build_layer({"type": kind, "units": 3, "return_sequences": True}, (4, 2))
    check_layer_grads(layer, np.random.default_rng(10).standard_normal((2, 4, 2)))


def test_numpys_blas_is_found_for_the_fused_lstm_loops():
    """Without it the LSTM's fused loops never run and the tests above cover only the per-step kernels."""
    from worker.engine import cpu_blas  # noqa: PLC0415

    for dtype in (np.float32, np.float64):
        assert cpu_blas.gemm(dtype) is not None
    from threadpoolctl import threadpool_limits  # noqa: PLC0415

    for threads in (1, 2):
        with threadpool_limits(threads, user_api="blas"):
            assert cpu_blas.threads() == threads


def test_the_fused_loops_chunk_their_products_only_on_one_blas_thread():
    """cpu_recurrent.chunked, which the loops and bench/recurrent_floor take their `chunked` from."""
    from threadpoolctl import threadpool_limits  # noqa: PLC0415

    from worker.engine import cpu_recurrent  # noqa: PLC0415

    for threads, chunked in ((1, True), (2, False)):
        with threadpool_limits(threads, user_api="blas"):
            assert cpu_recurrent.chunked() is chunked


def _count_fused_calls(monkeypatch) -> dict[str, int]:
    """Counts the calls of the fused loops (_lstm_forward, _lstm_backward) from now on."""
    from worker.engine import cpu_recurrent  # noqa: PLC0415

    calls = {"forward": 0, "backward": 0}
    for name, key in (("_LSTM_FORWARD", "forward"), ("_LSTM_BACKWARD", "backward")):
        def spy(*args, kernel=getattr(cpu_recurrent, name), key=key):
            calls[key] += 1
            return kernel(*args)
        monkeypatch.setattr(cpu_recurrent, name, spy)
    return calls


# 128: the products in K-chunks; 1: W^T (1, 4), which NumPy calls contiguous with a row stride of 1 element
@pytest.mark.parametrize(("units", "rows"), [(7, 5), (128, 67), (1, 5)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fused_lstm_loops_equal_the_per_step_kernels(dtype, units, rows, kernel_variant, monkeypatch):
    """Forward and backward by _lstm_forward/_lstm_backward (one call per loop, products by cblas)
    against the same layer with NumPy's BLAS hidden (per-step kernels and np.matmul), split in
    two parts of unequal size as on two threads, return_sequences both ways. With the parallel
    step kernel (kernel_variant) the fused loops must not run: then both sides are per-step."""
    from worker.engine import batch_split, cpu_blas  # noqa: PLC0415

    rng = np.random.default_rng(11)
    for return_sequences in (False, True):
        config = {"type": "lstm", "units": units, "return_sequences": return_sequences}
        layers = [build_layer(config, (6, 3), dtype=dtype) for _ in range(2)]
        x = rng.standard_normal((rows, 6, 3)).astype(dtype) * 3  # some gates saturate
        upstream = rng.standard_normal((rows, *layers[0].out_shape)).astype(dtype)
        # monkeypatch.context(): undo() would also undo kernel_variant's settings
        with batch_split.forced(2), monkeypatch.context() as patch:
            calls = _count_fused_calls(patch)
            fused = run(layers[0], x, upstream)
            fused_calls = dict(calls)
            patch.setattr(cpu_blas, "gemm", lambda dtype: None)
            reference = run(layers[1], x, upstream)
            assert calls == fused_calls  # the reference ran no fused loop
        expected = 2 if kernel_variant == "serial" else 0  # one call per part
        assert fused_calls == {"forward": expected, "backward": expected}
        wanted = {"out": reference[0], "dx": reference[1], **reference[2]}
        got = {"out": fused[0], "dx": fused[1], **fused[2]}
        for name, want in wanted.items():  # float32 sums of 400 rows: atol on the array's scale
            atol = TOLERANCE[dtype]["atol"] * max(1.0, np.abs(want).max() * 10)
            np.testing.assert_allclose(got[name], want, rtol=TOLERANCE[dtype]["rtol"], atol=atol, err_msg=name)


def _fused_loop_tanh(x):
    """cpu_recurrent.tanh over x in a loop compiled with the kernels' flags, as the fused loops call it
    (not disk-cached: Numba's cache would not see a change to the tanh in another module)."""
    import numba  # noqa: PLC0415

    from worker.engine import cpu_recurrent, kernel_jit  # noqa: PLC0415

    def apply(values, out):
        for k in range(values.size):
            out[k] = cpu_recurrent.tanh(values[k])

    out = np.empty_like(x)
    numba.njit(fastmath=kernel_jit.FAST, error_model="numpy")(apply)(x, out)
    return out


def _tanh_sample():
    """Millions of float32: a dense grid past the clamp, both signs of a geometric sweep from the
    smallest denormal, every float32 near the clamp, and the specials."""
    from worker.engine import cpu_recurrent  # noqa: PLC0415

    tiny = np.geomspace(1e-45, 1.0, 1_000_000)
    clamp = np.float32(cpu_recurrent.TANH_CLAMP)
    near_clamp = clamp + np.arange(-20_000, 20_000, dtype=np.float32) * np.spacing(clamp)
    specials = [0.0, -0.0, 1e-30, 3e-4, -5e-4, 50, -50, 1e30, np.inf, -np.inf]
    x = np.concatenate([np.linspace(-12, 12, 2_000_001), tiny, -tiny, near_clamp, -near_clamp, specials])
    return x.astype(np.float32)


def test_the_float32_tanh_of_the_fused_loops_is_within_a_few_ulp_odd_and_saturates():
    x = _tanh_sample()
    out = _fused_loop_tanh(x)
    exact = np.tanh(x.astype(np.float64))
    ulps = np.abs(out - exact) / np.spacing(np.abs(exact).astype(np.float32))
    assert ulps.max() < 6
    assert np.all(np.abs(out) <= 1)
    np.testing.assert_array_equal(_fused_loop_tanh(-x), -out)
    assert out[-2] == 1 and out[-1] == -1
    tiny = np.abs(x) < 1e-4  # denormals included: x itself
    np.testing.assert_array_equal(out[tiny], x[tiny])
    assert np.isnan(_fused_loop_tanh(np.array([np.nan, -np.nan], np.float32))).all()
    out64 = _fused_loop_tanh(x.astype(np.float64))
    np.testing.assert_allclose(out64, exact, rtol=1e-15)  # float64: libm's tanh


@pytest.mark.parametrize("beta", [0.0, 1.0])
def test_a_chunked_product_equals_numpys(beta):
    """_matmul_chunked over a product above SMALL_GEMM, K not a multiple of K_CHUNKS."""
    import numba  # noqa: PLC0415

    from worker.engine import cpu_blas, cpu_recurrent  # noqa: PLC0415

    assert 40 * 130 * 300 > cpu_recurrent.SMALL_GEMM >= 40 * 130 * (300 // cpu_recurrent.K_CHUNKS)
    product = numba.njit(lambda gemm, a, b, c, beta: cpu_recurrent._matmul_chunked(gemm, a, b, c, beta, True))
    rng = np.random.default_rng(12)
    a, b, c = rng.standard_normal((40, 300)), rng.standard_normal((300, 130)), rng.standard_normal((40, 130))
    expected = a @ b + beta * c
    product(cpu_blas.gemm(np.float64), a, b, c, beta)
    np.testing.assert_allclose(c, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(("m", "k", "n"), [(1, 1, 4), (5, 1, 4), (1, 4, 1), (5, 4, 1), (1, 1, 1)])
def test_a_product_with_dimensions_of_length_one_equals_numpys(m, k, n):
    """_matmul on operands whose length-1 dimensions have strides cblas rejects as a leading
    dimension (np.ascontiguousarray of a transpose keeps them: NumPy calls the view contiguous)."""
    import numba  # noqa: PLC0415

    from worker.engine import cpu_blas, cpu_recurrent  # noqa: PLC0415

    product = numba.njit(lambda gemm, a, b, c: cpu_recurrent._matmul(gemm, a, b, c, 1.0))
    rng = np.random.default_rng(13)
    a, b, c = (np.ascontiguousarray(rng.standard_normal(shape[::-1]).T) for shape in ((m, k), (k, n), (m, n)))
    expected = a @ b + c
    product(cpu_blas.gemm(np.float64), a, b, c)
    np.testing.assert_allclose(c, expected, rtol=1e-12, atol=1e-12)


def test_the_disk_cached_loops_read_no_constant_of_another_module():
    """Numba's disk cache is keyed on the kernel's own file: a constant read from another module
    (the CBLAS constants once came from cpu_blas) is frozen into the cached code and an edit there would not reach it."""
    from worker.engine import cpu_recurrent  # noqa: PLC0415

    for function in (cpu_recurrent._lstm_forward, cpu_recurrent._lstm_backward, cpu_recurrent._matmul_chunked,
                     cpu_recurrent._matmul, cpu_recurrent._leading):
        assert "cpu_blas" not in function.__code__.co_names, function.__name__


def test_the_chunked_products_and_conv_s_sample_groups_share_openblas_s_small_kernel_limit():
    """cpu_recurrent keeps the limit as its own literal (its disk-cached loops read it); conv2d takes cpu_blas's."""
    from worker.engine import cpu_blas, cpu_recurrent  # noqa: PLC0415
    from worker.engine.layers import conv  # noqa: PLC0415

    assert cpu_recurrent.SMALL_GEMM == cpu_blas.SMALL_GEMM == conv.SMALL_PRODUCT


def test_the_lstm_asks_for_cblas_before_the_split_in_the_callers_thread(monkeypatch):
    """cpu_blas.gemm (a ctypes lookup on its first call) is resolved once by the caller, never by
    the batch split's helper threads, forward and backward."""
    import threading  # noqa: PLC0415

    from worker.engine import batch_split, cpu_blas  # noqa: PLC0415

    askers, lookup = [], cpu_blas.gemm
    monkeypatch.setattr(cpu_blas, "gemm", lambda dtype: askers.append(threading.current_thread()) or lookup(dtype))
    layer = build_layer({"type": "lstm", "units": 3}, (4, 2))
    rng = np.random.default_rng(14)
    with batch_split.forced(2):
        run(layer, rng.standard_normal((6, 4, 2)), rng.standard_normal((6, 3)))
    assert all(thread is threading.main_thread() for thread in askers)


# W_hh reaches the loops as the layer's float32 copy (LSTM._loop_weights): both loops fused; a float64
# W_ih makes the projections float64, which the forward's gemm would read as float32: that loop per-step
@pytest.mark.parametrize(("suffix", "fused"), [("weight_hh_l0", {"forward": 1, "backward": 1}),
                                               ("weight_ih_l0", {"forward": 0, "backward": 1})])
def test_a_weight_of_another_dtype_reaches_the_fused_loops_only_in_the_layers_dtype(suffix, fused, kernel_variant,
                                                                                    monkeypatch):
    """The fused loops' gemm is chosen by one dtype and reads its operands as raw memory: a float64
    parameter in a float32 layer gives the float32 layer's result, fused only where every operand has its dtype."""
    rng = np.random.default_rng(15)
    layers = [build_layer({"type": "lstm", "units": 5, "return_sequences": True}, (4, 3), dtype=np.float32)
              for _ in range(2)]
    name = layers[0].name(suffix)
    layers[0].params[name] = layers[0].params[name].astype(np.float64)
    x, upstream = rng.standard_normal((6, 4, 3)).astype(np.float32), rng.standard_normal((6, 4, 5)).astype(np.float32)
    calls = _count_fused_calls(monkeypatch)
    mixed = run(layers[0], x, upstream)
    assert calls == (fused if kernel_variant == "serial" else {"forward": 0, "backward": 0})
    assert (layers[0].fused_loop(len(x))[1] is not None) == (calls["forward"] == 1)  # as bench_cnn_rnn asks
    reference = run(layers[1], x, upstream)
    for got, want in zip((*mixed[:2], *mixed[2].values()), (*reference[:2], *reference[2].values())):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("remake", [np.asfortranarray, lambda proj: proj.astype(np.float64)],
                         ids=["not_c_contiguous", "float64"])
def test_projections_the_fused_gemm_cannot_read_by_pointer_take_the_per_step_loop(remake, kernel_variant,
                                                                                 monkeypatch):
    """fused_loop infers the projections' layout from forward; LSTM._run checks the arrays
    themselves: a proj made otherwise (here by a wrapper of _run) runs the per-step loop, with its
    outputs, where fused_loop alone would have fused it."""
    rng = np.random.default_rng(18)
    layers = [build_layer({"type": "lstm", "units": 5, "return_sequences": True}, (4, 3), dtype=np.float32)
              for _ in range(2)]
    for layer in layers:
        layer._run = lambda proj, bias, run=layer._run: run(remake(proj), bias)
    x, upstream = rng.standard_normal((6, 4, 3)).astype(np.float32), rng.standard_normal((6, 4, 5)).astype(np.float32)
    assert (layers[0].fused_loop(len(x))[1] is not None) == (kernel_variant == "serial")
    calls = _count_fused_calls(monkeypatch)
    remade = run(layers[0], x, upstream)
    assert calls["forward"] == 0
    layers[1].fused_loop = lambda n, asked=layers[1].fused_loop: (asked(n)[0], None)  # the per-step forward
    reference = run(layers[1], x, upstream)
    for got, want in zip((*remade[:2], *remade[2].values()), (*reference[:2], *reference[2].values())):
        np.testing.assert_array_equal(got, want)


def test_the_loop_weights_follow_each_change_of_w_hh_between_forwards():
    """W_hh is copied into the loops' arrays on every forward (no cache to go stale): an in-place
    change between two forwards, as an optimizer step or a finite difference makes, reaches the output."""
    rng = np.random.default_rng(17)
    layers = [build_layer({"type": "lstm", "units": 4}, (3, 2)) for _ in range(2)]
    x = rng.standard_normal((5, 3, 2))
    layers[0].forward(x, True)
    for layer in layers:
        layer.params[layer.name("weight_hh_l0")] *= 1.5
    np.testing.assert_array_equal(layers[0].forward(x, True), layers[1].forward(x, True))


@pytest.mark.parametrize(("kind", "loops"), [("lstm", 2), ("gru", 1)])  # the GRU splits its backward loop only
def test_each_split_time_loop_asks_for_its_parts_once(kind, loops, monkeypatch):
    """The LSTM's fused gemm is chosen for the parts' size and batch_split.run takes the same count:
    one parts_for per loop, not one for each."""
    from worker.engine import batch_split  # noqa: PLC0415

    asked, parts_for = [], batch_split.parts_for
    monkeypatch.setattr(batch_split, "parts_for", lambda *args: asked.append(args) or parts_for(*args))
    layer = build_layer({"type": kind, "units": 3}, (4, 2))
    rng = np.random.default_rng(16)
    with batch_split.forced(2):
        run(layer, rng.standard_normal((6, 4, 2)), rng.standard_normal((6, 3)))
    assert asked == [(6,)] * loops
