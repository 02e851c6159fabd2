"""Checkpoint bytes: an .npz round trip that never unpickles."""
from __future__ import annotations

import io

import numpy as np
import pytest

from bps.checkpoints import decode_state, encode_state


def test_a_training_state_round_trips_exactly():
    state = {"param/0.weight": np.arange(6, dtype=np.float32).reshape(2, 3),
             "opt/step": np.asarray(7, np.int64), "epochs_done": np.asarray(3, np.int64)}
    back = decode_state(encode_state(state))
    assert set(back) == set(state)
    for name, value in state.items():
        assert back[name].dtype == value.dtype and np.array_equal(back[name], value)


def test_an_object_array_is_refused_not_unpickled():
    buffer = io.BytesIO()
    np.savez(buffer, evil=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError):
        decode_state(buffer.getvalue())
