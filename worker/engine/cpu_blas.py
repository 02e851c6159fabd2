"""NumPy's own BLAS product for Numba kernels: cblas_?gemm of the OpenBLAS that NumPy's wheels
carry (ILP64, symbols scipy_cblas_?gemm64_), as a ctypes function that a kernel takes as an
argument and calls without the GIL (cpu_recurrent's time loops do a whole loop's products and
gate math in one call).

Taken from the library NumPy already loaded (RTLD_NOLOAD), so a kernel's products run on the
same OpenBLAS, with the same thread count (threadpoolctl, threads.thread_budget,
batch_split.one_blas_thread), as np.matmul. Passed as an argument rather than bound as a global,
the kernels stay cacheable on disk. `gemm` is None where NumPy uses another BLAS: the callers
then keep their NumPy products. `threads` is that library's thread count now.
"""
from __future__ import annotations

import ctypes
import glob
import os
from typing import Any

import numpy as np

# M*N*K up to which OpenBLAS's SkylakeX sgemm runs its small-matrix kernels (no packing): conv2d's
# sample groups stay within it; cpu_recurrent.SMALL_GEMM is the same limit as a literal (Numba's
# disk cache is keyed on that kernel's own file), tested equal
SMALL_GEMM = 1_000_000
_SYMBOLS = {np.dtype(np.float32): ("scipy_cblas_sgemm64_", ctypes.c_float),
            np.dtype(np.float64): ("scipy_cblas_dgemm64_", ctypes.c_double)}
_found: dict[Any, Any] = {}


def _numpy_openblas() -> ctypes.CDLL | None:
    """The OpenBLAS of NumPy's wheel, looked up once per process (None where NumPy has another)."""
    if "lib" not in _found:
        _found["lib"] = _find_numpy_openblas()
    return _found["lib"]


def _find_numpy_openblas() -> ctypes.CDLL | None:
    libs = os.path.join(os.path.dirname(np.__file__), os.pardir, "numpy.libs")
    for path in sorted(glob.glob(os.path.join(libs, "libscipy_openblas64_*"))):
        try:
            return ctypes.CDLL(path, mode=os.RTLD_NOLOAD | os.RTLD_LAZY)  # only if NumPy loaded it
        except (OSError, AttributeError):
            continue
    return None


def _lookup(dtype: np.dtype) -> Any:
    lib = _numpy_openblas()
    if lib is None or dtype not in _SYMBOLS:
        return None
    symbol, scalar = _SYMBOLS[dtype]
    size, pointer = ctypes.c_int64, ctypes.c_void_p
    prototype = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_int, ctypes.c_int, size, size, size, scalar,
                                 pointer, size, pointer, size, scalar, pointer, size)
    try:
        return prototype((symbol, lib))
    except AttributeError:
        return None


def threads() -> int:
    """The thread count of NumPy's OpenBLAS now (as threadpoolctl or batch_split set it); 0
    where it was not found."""
    if "threads" not in _found:
        lib = _numpy_openblas()
        function = getattr(lib, "scipy_openblas_get_num_threads64_", None) if lib is not None else None
        if function is not None:
            function.restype, function.argtypes = ctypes.c_int, []
        _found["threads"] = function
    return _found["threads"]() if _found["threads"] is not None else 0


def gemm(dtype: Any) -> Any:
    """cblas_?gemm for `dtype` (float32, float64) from NumPy's OpenBLAS, or None."""
    dtype = np.dtype(dtype)
    if dtype not in _found:
        _found[dtype] = _lookup(dtype)
        threads()  # its lookup here too, before the parts of a split batch ask at once
    return _found[dtype]
