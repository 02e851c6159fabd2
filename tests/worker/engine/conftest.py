"""Shared helpers for the engine tests."""
from __future__ import annotations

import numpy as np
import pytest


def mlp_spec(*hidden: tuple[int, str], out_activation: str = "softmax", loss: str = "cross_entropy",
             **top) -> dict:
    layers = [{"type": "dense", "units": u, "activation": a} for u, a in hidden]
    layers.append({"type": "dense", "activation": out_activation})
    return {"layers": layers, "loss": loss, "device": "cpu", **top}


@pytest.fixture
def cp():
    """CuPy, or the test is skipped (the `gpu`-marked kernel tests)."""
    return pytest.importorskip("cupy")


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture(params=["serial", "parallel"])
def kernel_variant(request, monkeypatch):
    """Runs a test on the CPU kernels' serial compilations and on their parallel ones (forced at
    any size, on 2 threads)."""
    from worker.engine import kernel_jit  # noqa: PLC0415

    if request.param == "parallel":
        monkeypatch.setattr(kernel_jit, "PARALLEL_MIN", 0)
        monkeypatch.setattr(kernel_jit, "DENSE_PARALLEL_MIN", 0)
        monkeypatch.setattr(kernel_jit, "PARALLEL_MIN_THREADS", 2)
        previous = kernel_jit.use_threads(2)
        request.addfinalizer(lambda: kernel_jit.use_threads(previous))
    return request.param
