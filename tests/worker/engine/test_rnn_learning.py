"""Recurrent networks really learn, clipping keeps a diverging RNN alive, torch parity of a stack."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.worker.engine.gradcheck import assert_close
from worker.engine.network import Network

FREQUENCIES = (1.0, 2.0, 3.0)


def noisy_waves(n: int, steps: int = 24, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(n, steps, 1) sine waves of a random phase, one of FREQUENCIES cycles each, plus noise."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(FREQUENCIES), n)
    t = np.linspace(0.0, 1.0, steps)
    phase = rng.uniform(0, 2 * np.pi, (n, 1))
    waves = np.sin(2 * np.pi * np.array(FREQUENCIES)[labels][:, None] * t + phase)
    waves += 0.2 * rng.standard_normal(waves.shape)
    return waves[:, :, None].astype(np.float32), labels


def spec(layers, **overrides):
    return {"layers": layers, "loss": "cross_entropy", "epochs": 40, "batch_size": 32,
            "optimizer": {"type": "adam", "learning_rate": 0.01}, "validation_split": 0.0,
            "gradient_clip_norm": 1.0,
            "seed": 0, "dtype": "float32", "device": "cpu", **overrides}


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_recurrent_network_tells_wave_frequencies_apart(kind):
    X, y = noisy_waves(900)
    layers = [{"type": kind, "units": 16}, {"type": "dense", "activation": "softmax"}]
    net = Network.from_spec(spec(layers), input_shape=(24, 1), seed=0, n_outputs=3)
    net.fit(X[:600], y[:600])
    accuracy = float(np.mean(net.predict(X[600:]).argmax(axis=1) == y[600:]))
    assert accuracy >= 0.95, f"{kind}: held-out accuracy {accuracy:.3f}"


def test_gradient_clipping_keeps_an_exploding_rnn_training():
    """Large targets and a big SGD step blow an RNN up; the same run with clipping learns."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((256, 10, 4)).astype(np.float32)
    y = (10.0 * X[:, :, 0].sum(axis=1, keepdims=True) / np.sqrt(10)).astype(np.float32)
    layers = [{"type": "rnn", "units": 32}, {"type": "dense", "units": 1}]

    def train(clip):
        raw = spec(layers, loss="mse", epochs=15, optimizer={"type": "sgd", "learning_rate": 0.1,
                                                             "momentum": 0.9},
                   gradient_clip_norm=clip)
        net = Network.from_spec(raw, input_shape=(10, 4), seed=0)
        return net.fit(X, y)

    exploded = train(None)
    clipped = train(1.0)
    blown = [r["loss"] for r in exploded.epochs]
    assert exploded.stop_reason == "diverged" or blown[-1] is None or blown[-1] > 10 * blown[0], blown
    losses = [r["loss"] for r in clipped.epochs]
    assert clipped.stop_reason == "completed" and all(v is not None for v in losses), losses
    assert losses[-1] < 0.5 * losses[0], losses


def test_stacked_recurrent_network_matches_torch():
    """lstm (sequences) -> gru -> dense in float64: same loss and gradients as torch."""
    layers = [{"type": "lstm", "units": 5, "return_sequences": True}, {"type": "gru", "units": 4},
              {"type": "dense", "units": 3, "activation": "softmax"}]
    net = Network.from_spec(spec(layers, dtype="float64"), input_shape=(6, 2), seed=3)
    lstm, gru, dense = torch.nn.LSTM(2, 5, batch_first=True), torch.nn.GRU(5, 4, batch_first=True), torch.nn.Linear(4, 3)
    for index, module in enumerate((lstm, gru, dense)):
        module.double().load_state_dict({name.split(".", 1)[1]: torch.from_numpy(np.array(v))
                                         for name, v in net.params.items() if name.startswith(f"{index}.")})
    rng = np.random.default_rng(4)
    X, y = rng.standard_normal((7, 6, 2)), rng.integers(0, 3, 7)
    loss, grads = net.loss_and_grads(X, y)
    logits = dense(gru(lstm(torch.from_numpy(X))[0])[0][:, -1])
    torch_loss = torch.nn.functional.cross_entropy(logits, torch.from_numpy(y))
    torch_loss.backward()
    assert abs(loss - torch_loss.item()) < 1e-10
    for index, module in enumerate((lstm, gru, dense)):
        for name, param in module.named_parameters():
            assert_close(grads[f"{index}.{name}"], param.grad.numpy(), what=f"{index}.{name}")
