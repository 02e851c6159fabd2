"""The array module of a network, chosen once: NumPy on CPU, CuPy on GPU.

Everything on the training path calls `xp.<function>` on the module returned here, so the GPU
is a backend switch and not a rewrite. Host-side work (initialisation, saving) uses NumPy and
moves arrays with `to_device` / `to_numpy`.
"""
from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np

DEVICES = ("cpu", "gpu")


class DeviceUnavailable(RuntimeError):
    """The requested device cannot be used in this process."""


def get_array_module(device: str) -> ModuleType:
    """NumPy for "cpu", CuPy for "gpu" (raises DeviceUnavailable without CuPy or a GPU)."""
    if device == "cpu":
        return np
    if device != "gpu":
        raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
    try:
        import cupy  # noqa: PLC0415  (imported only in the process that trains on a GPU)
    except ImportError as exc:
        raise DeviceUnavailable("device 'gpu' needs CuPy: pip install 'backprop-service[gpu]'") from exc
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            raise DeviceUnavailable("no CUDA GPU is visible to this process")
    except cupy.cuda.runtime.CUDARuntimeError as exc:
        raise DeviceUnavailable(f"no usable CUDA GPU: {exc}") from exc
    return cupy


def gpu_available() -> bool:
    try:
        get_array_module("gpu")
    except DeviceUnavailable:
        return False
    return True


def resolve_device(device: str) -> str:
    """'auto' -> 'gpu' when one is usable here, else 'cpu'."""
    if device == "auto":
        return "gpu" if gpu_available() else "cpu"
    return device


def to_numpy(array: Any) -> np.ndarray:
    """A host NumPy copy (or view) of a NumPy or CuPy array."""
    if isinstance(array, np.ndarray):
        return array
    get = getattr(array, "get", None)
    return get() if get is not None else np.asarray(array)


def to_device(array: np.ndarray, xp: ModuleType, dtype: Any | None = None) -> Any:
    """`array` on the device of `xp`, in `dtype` when given (no copy when already there)."""
    if xp is np:
        return np.asarray(array, dtype=dtype)
    return xp.asarray(array, dtype=dtype)
