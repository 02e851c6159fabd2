"""Finite-difference checks of Network.loss_and_grads in float64 (the approach of
scikit-learn's test_mlp.py::test_gradient) for every activation, loss and layer kind."""
from __future__ import annotations

import numpy as np
import pytest

from tests.worker.engine.conftest import mlp_spec
from tests.worker.engine.gradcheck import assert_close, numeric_grad
from worker.engine import Network
from worker.engine.activations import ACTIVATIONS

HIDDEN = [a for a in ACTIVATIONS if a != "softmax"]


def _targets(loss: str, rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    if loss == "cross_entropy":
        return rng.integers(0, k, n)
    if loss == "binary_cross_entropy":
        return rng.integers(0, 2, (n, k)).astype(float)
    return rng.standard_normal((n, k))


def check_gradients(net: Network, X: np.ndarray, y: np.ndarray, before=None) -> None:
    def loss_fn() -> float:
        if before is not None:
            before()
        return net.loss_and_grads(X, y)[0]

    if before is not None:
        before()
    _, grads = net.loss_and_grads(X, y)
    assert set(grads) == set(net.params)
    for name, param in net.params.items():
        assert_close(grads[name], numeric_grad(loss_fn, param), rtol=1e-5, atol=1e-8, what=name)


@pytest.mark.parametrize("activation", HIDDEN)
def test_gradient_every_hidden_activation(activation, rng):
    spec = mlp_spec((5, activation), (4, activation), out_activation="linear", loss="mse", dtype="float64")
    net = Network.from_spec(spec, input_shape=(3,), n_outputs=2)
    check_gradients(net, rng.standard_normal((6, 3)), _targets("mse", rng, 6, 2))


@pytest.mark.parametrize(("loss", "out_activation"), [
    ("mse", "linear"), ("mae", "tanh"), ("huber", "linear"), ("mse", "softmax"), ("mse", "sigmoid"),
    ("cross_entropy", "softmax"), ("binary_cross_entropy", "sigmoid")])
@pytest.mark.parametrize("l2", [0.0, 0.3])
def test_gradient_every_loss_with_and_without_l2(loss, out_activation, l2, rng):
    spec = mlp_spec((6, "tanh"), out_activation=out_activation, loss=loss, l2=l2, dtype="float64")
    net = Network.from_spec(spec, input_shape=(4,), n_outputs=3)
    y = _targets(loss, rng, 7, 3)
    X = rng.standard_normal((7, 4)) * (3.0 if loss == "huber" else 1.0)  # huber: both branches
    check_gradients(net, X, y)


@pytest.mark.parametrize("l2", [0.0, 0.1])
def test_gradient_with_batchnorm_and_dropout(l2, rng):
    spec = {"layers": [{"type": "dense", "units": 6, "activation": "relu"}, {"type": "batchnorm"},
                       {"type": "dropout", "rate": 0.3}, {"type": "dense", "units": 5, "activation": "elu"},
                       {"type": "batchnorm", "momentum": 0.2}, {"type": "dense", "activation": "softmax"}],
            "loss": "cross_entropy", "l2": l2, "dtype": "float64", "device": "cpu"}
    net = Network.from_spec(spec, input_shape=(4,), n_outputs=3)
    dropout = net.layers[2]

    def same_mask():
        dropout.rng = np.random.default_rng(7)

    check_gradients(net, rng.standard_normal((8, 4)), _targets("cross_entropy", rng, 8, 3), before=same_mask)


def test_l2_adds_half_sum_of_squared_weights_only(rng):
    spec = mlp_spec((4, "relu"), loss="cross_entropy", dtype="float64")
    X, y = rng.standard_normal((5, 3)), rng.integers(0, 2, 5)
    plain = Network.from_spec(spec, input_shape=(3,), n_outputs=2)
    reg = Network.from_spec({**spec, "l2": 0.5}, input_shape=(3,), n_outputs=2)
    weights = sum(float((plain.params[f"{i}.weight"] ** 2).sum()) for i in (0, 1))
    assert reg.loss_and_grads(X, y)[0] == pytest.approx(plain.loss_and_grads(X, y)[0] + 0.25 * weights)


def test_params_use_pytorch_names_and_layouts():
    spec = {"layers": [{"type": "dense", "units": 7, "activation": "relu"}, {"type": "batchnorm"},
                       {"type": "dense", "activation": "softmax"}], "device": "cpu"}
    net = Network.from_spec(spec, input_shape=(5,), n_outputs=3)
    assert {k: v.shape for k, v in net.params.items()} == {
        "0.weight": (7, 5), "0.bias": (7,), "1.weight": (7,), "1.bias": (7,), "2.weight": (3, 7), "2.bias": (3,)}
    assert set(net.buffers) == {"1.running_mean", "1.running_var", "1.num_batches_tracked"}
    assert all(v.dtype == np.float32 for v in net.params.values())


def test_params_and_grads_are_views_into_one_flat_buffer_each(rng):
    spec = {"layers": [{"type": "conv2d", "filters": 2, "kernel_size": 3, "activation": "relu"},
                       {"type": "flatten"}, {"type": "dense", "units": 4, "activation": "relu"},
                       {"type": "dense", "activation": "softmax"}], "loss": "cross_entropy", "device": "cpu"}
    net = Network.from_spec(spec, input_shape=(1, 5, 5), n_outputs=3)
    assert net.flat_params.size == sum(p.size for p in net.params.values())
    for name, p in net.params.items():
        assert np.shares_memory(p, net.flat_params) and np.shares_memory(net.grad_views[name], net.flat_grads), name
    net.flat_params[:] = 0.5
    assert all(np.all(p == 0.5) for p in net.params.values()) and np.all(net.layers[2].weight == 0.5)
    _, grads = net.loss_and_grads(rng.standard_normal((6, 1, 5, 5)), rng.integers(0, 3, 6))
    # conv returns new gradient arrays: backward copies them into the flat buffer
    flat = np.concatenate([g.reshape(-1) for g in grads.values()])
    np.testing.assert_array_equal(net.flat_grads, flat)
    assert np.any(net.grad_views["0.weight"] != 0)


def test_initialisation_he_for_relu_glorot_otherwise_biases_zero():
    spec = mlp_spec((400, "relu"), (300, "tanh"), device="cpu")
    net = Network.from_spec(spec, input_shape=(500,), n_outputs=200)
    assert np.std(net.params["0.weight"]) == pytest.approx(np.sqrt(2 / 500), rel=0.02)
    limit = np.sqrt(6 / (400 + 300))
    assert np.abs(net.params["1.weight"]).max() <= limit
    assert np.std(net.params["1.weight"]) == pytest.approx(limit / np.sqrt(3), rel=0.02)
    assert not any(net.params[f"{i}.bias"].any() for i in range(3))


def test_output_units_inferred_from_targets(rng):
    net = Network.from_spec(mlp_spec((4, "relu"), epochs=1))
    net.fit(rng.standard_normal((20, 3)), rng.integers(0, 4, 20))
    assert net.params["1.weight"].shape == (4, 4)
    assert net.spec["layers"][-1]["units"] == 4
    reg = Network.from_spec(mlp_spec((4, "relu"), out_activation="linear", loss="mse", epochs=1))
    reg.fit(rng.standard_normal((20, 3)), rng.standard_normal((20, 2)))
    assert reg.predict(rng.standard_normal((3, 3))).shape == (3, 2)
