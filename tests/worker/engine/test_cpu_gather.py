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
