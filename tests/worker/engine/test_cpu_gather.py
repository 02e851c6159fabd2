"""The fit loop's prefetching gather copies exactly what np.take copies, refuses row indices
outside X instead of reading past it, and falls back to np.take where a reshape would copy; where
LLVM does not know the prefetch intrinsic, the plain gather does the same."""
from __future__ import annotations

import numpy as np
import pytest

from worker.engine import cpu_gather
from worker.engine.cpu_gather import ROWS_AHEAD, gather_rows

UNKNOWN_INTRINSIC = "llvm.no.such.prefetch"  # what a renamed intrinsic looks like to this LLVM


@pytest.fixture(params=["prefetching", "plain"], autouse=True)
def kernel(request, monkeypatch):
    """Every test on both gathers: the plain one chosen as it would be where the intrinsic's name
    is unknown."""
    monkeypatch.setattr(cpu_gather, "_chosen", {})
    if request.param == "plain":
        monkeypatch.setattr(cpu_gather, "PREFETCH_INTRINSIC", UNKNOWN_INTRINSIC)
    return request.param


def test_the_prefetch_compiles_with_this_llvm(kernel):
    """Fails after an llvmlite upgrade that renames the intrinsic: the fit loop still gathers
    right (the plain kernel), but without the prefetch hints."""
    assert cpu_gather.prefetch_compiles() is (kernel == "prefetching")


def test_the_prefetching_kernel_runs_only_where_the_prefetch_compiles(kernel, rng):
    X = rng.standard_normal((40, 6)).astype(np.float32)
    idx = rng.permutation(40)[:ROWS_AHEAD + 5]
    out = np.empty((idx.size, 6), np.float32)
    gather_rows(X, idx, out)
    np.testing.assert_array_equal(out, np.take(X, idx, axis=0))
    plain = kernel == "plain"
    assert cpu_gather._chosen["kernel"] is (cpu_gather._GATHER_PLAIN if plain else cpu_gather._GATHER)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64])
@pytest.mark.parametrize("shape", [(50, 7), (50,), (50, 3, 4, 2)], ids=["matrix", "labels", "images"])
@pytest.mark.parametrize("rows", [1, ROWS_AHEAD, 37])  # fewer rows than the prefetch distance, and more
def test_gather_equals_take(dtype, shape, rows, rng):
    X = (rng.standard_normal(shape) * 100).astype(dtype)
    idx = rng.permutation(shape[0])[:rows]
    out = np.full((rows, *shape[1:]), -1, dtype)
    assert gather_rows(X, idx, out) is out
    np.testing.assert_array_equal(out, np.take(X, idx, axis=0))


def test_gather_fills_a_leading_view_of_a_larger_buffer(rng):
    """The fit loop's last, smaller batch writes into buffer[:m]."""
    X = rng.standard_normal((30, 5)).astype(np.float32)
    buffer = np.zeros((16, 5), np.float32)
    idx = np.array([29, 0, 7])
    gather_rows(X, idx, buffer[:3])
    np.testing.assert_array_equal(buffer[:3], X[idx])
    assert not buffer[3:].any()


def test_nan_and_infinity_are_copied(rng):
    X = np.array([[np.nan, 1.0], [np.inf, -np.inf]], np.float32)
    out = np.empty((2, 2), np.float32)
    gather_rows(X, np.array([1, 0]), out)
    np.testing.assert_array_equal(out, X[[1, 0]])


@pytest.mark.parametrize("bad", [-1, 30])
def test_index_outside_x_is_refused(bad):
    X, out = np.zeros((30, 4), np.float32), np.zeros((2, 4), np.float32)
    with pytest.raises(IndexError):
        gather_rows(X, np.array([0, bad]), out)


def test_non_contiguous_arrays_take_the_numpy_path(rng):
    X = rng.standard_normal((20, 8)).astype(np.float32)[:, ::2]  # strided: a reshape would copy
    idx = np.array([3, 19, 0])
    out = np.empty((3, 4), np.float32)
    gather_rows(X, idx, out)
    np.testing.assert_array_equal(out, X[idx])
    wide = np.empty((3, 8), np.float32)
    gather_rows(X, idx, wide[:, ::2])  # a strided destination is written, not a copy of it
    np.testing.assert_array_equal(wide[:, ::2], X[idx])


@pytest.fixture
def two_threads(monkeypatch):
    """The parallel variants allowed on a 2-thread budget at any size (both Numba threads run)."""
    from worker.engine import kernel_jit  # noqa: PLC0415

    monkeypatch.setattr(kernel_jit, "PARALLEL_MIN", 0)
    monkeypatch.setattr(kernel_jit, "PARALLEL_MIN_THREADS", 2)
    previous = kernel_jit.use_threads(2)
    yield
    kernel_jit.use_threads(previous)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64])
@pytest.mark.parametrize("parts", [2, 3])
@pytest.mark.parametrize("rows", [1, ROWS_AHEAD, 37])  # fewer rows than parts, and each part past the prefetch
def test_parallel_gather_equals_the_serial_one(dtype, parts, rows, rng, two_threads):
    """A copy: the parallel variant's parts give the serial gather's values bit for bit."""
    X = (rng.standard_normal((50, 7)) * 100).astype(dtype)
    idx = rng.permutation(50)[:rows]
    serial_out, parallel_out = np.full((rows, 7), -1, dtype), np.full((rows, 7), -2, dtype)
    serial, parallel = cpu_gather._pick_kernel()
    serial(X, idx, serial_out, ROWS_AHEAD, 1)
    parallel(X, idx, parallel_out, ROWS_AHEAD, parts)
    np.testing.assert_array_equal(parallel_out, serial_out)
    np.testing.assert_array_equal(serial_out, np.take(X, idx, axis=0))


def _spy_on_the_parallel_gather(monkeypatch) -> list[int]:
    calls, (serial, parallel) = [], cpu_gather._pick_kernel()

    def spy(X, idx, out, ahead, parts):
        calls.append(parts)
        parallel(X, idx, out, ahead, parts)

    monkeypatch.setitem(cpu_gather._chosen, "kernel", (serial, spy))
    return calls


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gather_rows_runs_the_parallel_gather_when_forced_on_two_threads(dtype, rng, two_threads, monkeypatch):
    calls = _spy_on_the_parallel_gather(monkeypatch)
    X = rng.standard_normal((60, 3, 5)).astype(dtype)
    idx = rng.permutation(60)[:41]
    out = np.empty((41, 3, 5), dtype)
    gather_rows(X, idx, out)
    assert calls == [2]
    np.testing.assert_array_equal(out, np.take(X, idx, axis=0))
    with pytest.raises(IndexError):
        gather_rows(X, np.array([0, 60]), out[:2])


def test_the_parallel_gather_runs_from_four_threads_on_large_batches(rng, monkeypatch):
    """On 2 threads the serial gather (its parallel variant lost there); from
    kernel_jit.PARALLEL_MIN_THREADS threads the parallel one, for batches of at least
    kernel_jit.PARALLEL_MIN elements."""
    from worker.engine import kernel_jit  # noqa: PLC0415

    calls = _spy_on_the_parallel_gather(monkeypatch)
    X = rng.standard_normal((kernel_jit.PARALLEL_MIN // 64 + 8, 64)).astype(np.float32)
    big, small = np.empty((kernel_jit.PARALLEL_MIN // 64, 64), np.float32), np.empty((8, 64), np.float32)
    previous = kernel_jit.use_threads(2)
    try:
        gather_rows(X, np.arange(big.shape[0]), big)
        assert calls == []
        kernel_jit.use_threads(kernel_jit.PARALLEL_MIN_THREADS)
        gather_rows(X, np.arange(8), small)
        assert calls == []
        gather_rows(X, np.arange(big.shape[0]), big)
        assert len(calls) == 1
    finally:
        kernel_jit.use_threads(previous)
    np.testing.assert_array_equal(big, X[:big.shape[0]])


@pytest.mark.parametrize("out_shape", [(2, 3), (3, 5), (2, 6), (2, 5, 1)], ids=["narrow", "rows", "wide", "rank"])
def test_gather_refuses_an_out_of_another_shape(out_shape, rng):
    """The kernel copies X's row length into each out row: a narrower out (here a view of a larger
    buffer) would be written past, so no shape but (len(idx), *X.shape[1:]) is accepted."""
    X = rng.standard_normal((4, 5)).astype(np.float32)
    buffer = np.zeros(int(np.prod(out_shape)) + 8, np.float32)
    out = buffer[:int(np.prod(out_shape))].reshape(out_shape)
    with pytest.raises(ValueError, match=r"out has shape .* need \(2, 5\)"):
        gather_rows(X, np.array([1, 0]), out)
    assert not buffer.any()


@pytest.mark.parametrize("variants", [1, 2])
def test_warm_up_runs_the_serial_gather_and_with_two_variants_the_parallel_one(variants, monkeypatch):
    """As cpu_conv's and cpu_recurrent's warm_up: `variants` counts the (serial, parallel) pair."""
    ran = []
    monkeypatch.setitem(cpu_gather._chosen, "kernel", tuple(
        lambda rows, *_, k=k: ran.append((k, rows.dtype)) for k in (0, 1)))
    cpu_gather.warm_up(np.float64, variants)
    assert ran == [(k, np.dtype(kind)) for kind in (np.float64, np.int64) for k in range(variants)]
