"""Model files: .npz round trip, PyTorch names, and refusal of anything that needs pickle."""
from __future__ import annotations

import io
import json

import numpy as np
import pytest

from worker.engine import Network


def _trained(rng) -> tuple[Network, np.ndarray]:
    spec = {"layers": [{"type": "dense", "units": 8, "activation": "relu"}, {"type": "batchnorm"},
                       {"type": "dropout", "rate": 0.2}, {"type": "dense", "activation": "softmax"}],
            "epochs": 2, "device": "cpu"}
    X = rng.standard_normal((64, 5))
    net = Network.from_spec(spec)
    net.fit(X, rng.integers(0, 3, 64))
    return net, X


def test_round_trip_gives_identical_predictions(tmp_path, rng):
    net, X = _trained(rng)
    path = tmp_path / "model.npz"
    net.save(path)
    loaded = Network.load(path)
    np.testing.assert_array_equal(loaded.predict(X), net.predict(X))
    assert loaded.spec == net.spec
    with np.load(path, allow_pickle=False) as data:
        assert {"0.weight", "1.running_mean", "1.num_batches_tracked", "3.bias"} <= set(data.files)
        assert json.loads(str(data["spec"]))["layers"][-1]["units"] == 3


def test_round_trip_through_a_file_object(rng):
    net, X = _trained(rng)
    buffer = io.BytesIO()
    net.save(buffer)
    buffer.seek(0)
    np.testing.assert_array_equal(Network.load(buffer).predict(X), net.predict(X))


def test_load_refuses_a_file_that_needs_pickle(tmp_path, rng):
    net, _ = _trained(rng)
    good = tmp_path / "good.npz"
    net.save(good)
    with np.load(good) as data:
        arrays = dict(data)
    arrays["0.weight"] = np.array([object()], dtype=object)
    bad = tmp_path / "bad.npz"
    np.savez(bad, **arrays)
    with pytest.raises(ValueError, match="pickle"):
        Network.load(bad)


def test_load_refuses_files_that_are_not_models(tmp_path):
    path = tmp_path / "x.npz"
    np.savez(path, X=np.zeros(3))
    with pytest.raises(ValueError, match="missing"):
        Network.load(path)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError):
        Network.load(tmp_path / "junk.npz")
