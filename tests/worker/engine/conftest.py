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
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)
