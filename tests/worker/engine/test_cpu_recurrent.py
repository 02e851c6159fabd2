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
