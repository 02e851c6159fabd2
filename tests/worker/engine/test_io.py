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


def test_round_trip_keeps_a_dtype_given_to_from_spec(tmp_path, rng):
    spec = {"layers": [{"type": "dense", "units": 4, "activation": "tanh"}, {"type": "dense", "units": 2}],
            "loss": "mse", "epochs": 1, "dtype": "float32", "device": "cpu"}
    net = Network.from_spec(spec, input_shape=(3,), dtype="float64")
    net.fit(rng.standard_normal((16, 3)), rng.standard_normal((16, 2)))
    net.save(tmp_path / "m.npz")
    loaded = Network.load(tmp_path / "m.npz")
    assert loaded.params["0.weight"].dtype == np.float64
    X = rng.standard_normal((5, 3))
    np.testing.assert_array_equal(loaded.predict(X), net.predict(X))


def test_params_taken_before_the_build_stay_live(rng):
    spec = {"layers": [{"type": "dense", "units": 4, "activation": "relu"}, {"type": "batchnorm"},
                       {"type": "dense", "activation": "softmax"}], "loss": "cross_entropy", "device": "cpu"}
    net = Network.from_spec(spec, input_shape=(3,))
    params, buffers = net.params, net.buffers
    assert params == {}  # the output width is not known before the first batch of targets
    net.loss_and_grads(rng.standard_normal((8, 3)), rng.integers(0, 3, 8))
    assert params is net.params and set(params) == {"0.weight", "0.bias", "1.weight", "1.bias", "2.weight", "2.bias"}
    assert buffers is net.buffers and "1.running_mean" in buffers


def test_state_dict_loads_strictly_into_the_mirroring_torch_module(rng):
    torch = pytest.importorskip("torch")
    spec = {"layers": [{"type": "dense", "units": 4, "activation": "relu"}, {"type": "batchnorm"},
                       {"type": "dense", "units": 2}], "loss": "mse", "epochs": 1, "dtype": "float64",
            "device": "cpu"}
    net = Network.from_spec(spec, input_shape=(3,))
    X = rng.standard_normal((16, 3))
    net.fit(X, rng.standard_normal((16, 2)))
    class LinearReLU(torch.nn.Linear):  # spec layer 0: dense + relu, owning "0.weight"/"0.bias"
        def forward(self, x):  # noqa: ANN001, ANN202
            return torch.relu(super().forward(x))

    module = torch.nn.Sequential(LinearReLU(3, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 2)).double()
    module.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in net.state_dict().items()}, strict=True)
    module.eval()
    np.testing.assert_allclose(module(torch.from_numpy(X)).detach().numpy(), net.predict(X), rtol=1e-12)
