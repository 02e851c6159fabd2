"""Training checkpoints as bytes: the engine's `training_state()` (a dict of NumPy arrays:
weights, optimizer moments, schedule, early-stopping state, epochs done) in an .npz.

Nothing is pickled: saved with `np.savez`, loaded with `allow_pickle=False`, so a checkpoint
row can hold only numeric (or plain string) arrays."""
from __future__ import annotations

import io

import numpy as np


def encode_state(state: dict[str, np.ndarray]) -> bytes:
    """`{name: array}` -> .npz bytes (uncompressed: checkpoints are written every epoch)."""
    buffer = io.BytesIO()
    np.savez(buffer, **{name: np.asarray(value) for name, value in state.items()})
    return buffer.getvalue()


def decode_state(data: bytes) -> dict[str, np.ndarray]:
    """.npz bytes -> `{name: array}`; raises ValueError for an object (pickled) array."""
    with np.load(io.BytesIO(data), allow_pickle=False) as archive:
        return {name: archive[name] for name in archive.files}
