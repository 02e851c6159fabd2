"""A small CNN really learns: scikit-learn's digits as 1x8x8 images, >= 97% held-out accuracy."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from tests.worker.engine.gradcheck import assert_close
from worker.engine.network import Network

CNN_LAYERS = [
    {"type": "conv2d", "filters": 16, "kernel_size": 3, "padding": "same", "activation": "relu"},
    {"type": "maxpool2d", "pool_size": 2},
    {"type": "conv2d", "filters": 32, "kernel_size": 3, "activation": "relu"},
    {"type": "flatten"},
    {"type": "dense", "activation": "softmax"},
]


def spec(**overrides):
    return {"layers": CNN_LAYERS, "loss": "cross_entropy", "epochs": 12, "batch_size": 32,
            "optimizer": {"type": "adam", "learning_rate": 0.003}, "validation_split": 0.0,
            "seed": 0, "dtype": "float32", "device": "cpu", **overrides}


@pytest.mark.slow
def test_small_cnn_reaches_97_percent_on_held_out_digits():
    digits = load_digits()
    X = (digits.images / 16.0).astype(np.float32)[:, None]  # (N, 1, 8, 8)
    y = digits.target
    order = np.random.default_rng(0).permutation(len(y))
    train, test = order[:1400], order[1400:]
    net = Network.from_spec(spec(), input_shape=(1, 8, 8), seed=0, n_outputs=10)
    history = net.fit(X[train], y[train])
    assert history.epochs[-1]["loss"] < history.epochs[0]["loss"]
    accuracy = float(np.mean(net.predict(X[test]).argmax(axis=1) == y[test]))
    assert accuracy >= 0.97, f"held-out accuracy {accuracy:.3f}"


def test_cnn_network_matches_torch_loss_and_gradients():
    """The network's params load into a mirroring torch module: same loss and gradients."""
    layers = [{"type": "conv2d", "filters": 4, "kernel_size": 3, "stride": 2, "padding": 1,
               "activation": "tanh"},
              {"type": "avgpool2d", "pool_size": 2},
              {"type": "conv2d", "filters": 3, "kernel_size": 2, "padding": "same", "activation": "relu"},
              {"type": "maxpool2d", "pool_size": 2, "stride": 1},
              {"type": "flatten"}, {"type": "dense", "units": 5, "activation": "softmax"}]
    net = Network.from_spec(spec(layers=layers, dtype="float64"), input_shape=(2, 9, 9), seed=1)
    nn = torch.nn
    mirror = nn.Sequential(nn.Sequential(nn.Conv2d(2, 4, 3, 2, 1), nn.Tanh()), nn.AvgPool2d(2),
                           nn.Sequential(nn.Conv2d(4, 3, 2, padding="same"), nn.ReLU()),
                           nn.MaxPool2d(2, 1), nn.Flatten(), nn.Linear(3, 5)).double()
    state = {}
    for name, value in net.params.items():
        index, suffix = name.split(".", 1)
        prefix = f"{index}.0." if index in ("0", "2") else f"{index}."
        state[prefix + suffix] = torch.from_numpy(np.array(value))
    mirror.load_state_dict(state)
    rng = np.random.default_rng(2)
    X, y = rng.standard_normal((6, 2, 9, 9)), rng.integers(0, 5, 6)
    loss, grads = net.loss_and_grads(X, y)
    torch_loss = nn.functional.cross_entropy(mirror(torch.from_numpy(X)), torch.from_numpy(y))
    torch_loss.backward()
    assert abs(loss - torch_loss.item()) < 1e-10
    for name, param in mirror.named_parameters():
        index, *_, suffix = name.split(".")
        assert_close(grads[f"{index}.{suffix}"], param.grad.numpy(), what=name)
