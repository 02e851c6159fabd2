"""A torch.nn.Sequential mirroring a spec loads net.params with load_state_dict and computes the
same outputs, loss and gradients (CONTRACT §4)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from worker.engine import Network

TORCH_ACT = {"relu": torch.nn.ReLU, "tanh": torch.nn.Tanh, "sigmoid": torch.nn.Sigmoid, "elu": torch.nn.ELU,
             "gelu": torch.nn.GELU, "softplus": torch.nn.Softplus, "leaky_relu": torch.nn.LeakyReLU,
             "linear": torch.nn.Identity}


class Dense(torch.nn.Module):
    def __init__(self, n_in: int, n_out: int, activation: str) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(n_out, n_in, dtype=torch.float64))
        self.bias = torch.nn.Parameter(torch.zeros(n_out, dtype=torch.float64))
        self.act = TORCH_ACT.get(activation, torch.nn.Identity)()

    def forward(self, x):
        return self.act(torch.nn.functional.linear(x, self.weight, self.bias))


def mirror(spec: dict, n_in: int) -> torch.nn.Sequential:
    """The torch model; a softmax/sigmoid output stays logits (the torch losses take logits)."""
    modules, width = [], n_in
    for cfg in spec["layers"]:
        if cfg["type"] == "dense":
            act = "linear" if cfg["activation"] in ("softmax", "sigmoid") else cfg["activation"]
            modules.append(Dense(width, cfg["units"], act))
            width = cfg["units"]
        elif cfg["type"] == "batchnorm":
            modules.append(torch.nn.BatchNorm1d(width, momentum=cfg["momentum"], eps=cfg["eps"]).double())
        else:
            modules.append(torch.nn.Dropout(cfg["rate"]))
    return torch.nn.Sequential(*modules)


SPEC = {"layers": [{"type": "dense", "units": 8, "activation": "gelu"}, {"type": "batchnorm"},
                   {"type": "dense", "units": 6, "activation": "elu"}, {"type": "dropout", "rate": 0.0},
                   {"type": "dense", "units": 5, "activation": "leaky_relu"},
                   {"type": "dense", "activation": "softmax"}],
        "loss": "cross_entropy", "l2": 0.0, "dtype": "float64", "device": "cpu"}


@pytest.mark.parametrize(("loss", "out_act"), [("cross_entropy", "softmax"), ("binary_cross_entropy", "sigmoid"),
                                               ("huber", "tanh"), ("mae", "softplus")])
def test_outputs_loss_and_gradients_match_torch(loss, out_act):
    spec = {**SPEC, "loss": loss, "layers": [*SPEC["layers"][:-1], {"type": "dense", "activation": out_act}]}
    net = Network.from_spec(spec, input_shape=(4,), n_outputs=3)
    model = mirror(net.spec, 4)
    model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in {**net.params, **net.buffers}.items()},
                          strict=True)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((10, 4))
    y = {"cross_entropy": rng.integers(0, 3, 10), "binary_cross_entropy": rng.integers(0, 2, (10, 3)) * 1.0}.get(
        loss, rng.standard_normal((10, 3)))
    value, grads = net.loss_and_grads(X, y)
    model.train()
    out = model(torch.from_numpy(X))
    criterion = {"cross_entropy": torch.nn.CrossEntropyLoss(), "binary_cross_entropy": torch.nn.BCEWithLogitsLoss(),
                 "huber": torch.nn.HuberLoss(), "mae": torch.nn.L1Loss()}[loss]
    t_loss = criterion(out, torch.from_numpy(y))
    t_loss.backward()
    assert value == pytest.approx(t_loss.item(), rel=1e-10)
    for name, p in model.named_parameters():
        np.testing.assert_allclose(grads[name], p.grad.numpy(), rtol=1e-8, atol=1e-12, err_msg=name)
    np.testing.assert_allclose(net.buffers["1.running_var"], model[1].running_var.detach().numpy(), rtol=1e-10)
    model.eval()
    with torch.no_grad():
        t_out = model(torch.from_numpy(X))
        if out_act in ("softmax", "sigmoid"):
            t_out = torch.softmax(t_out, 1) if out_act == "softmax" else torch.sigmoid(t_out)
    np.testing.assert_allclose(net.predict(X), t_out.numpy(), rtol=1e-9, atol=1e-12)


def test_batchnorm_2d_layer_matches_torch():
    from worker.engine.layers import BuildContext, layer_class

    layer = layer_class("batchnorm")({"type": "batchnorm", "momentum": 0.3, "eps": 1e-5}, 0)
    ctx = BuildContext(np, np.float64, np.random.default_rng(0), np.random.default_rng(0))
    layer.build((3, 4, 5), ctx)
    layer.params["0.weight"][:] = [0.5, 1.5, -1.0]
    layer.params["0.bias"][:] = [0.1, 0.0, 0.3]
    torch_bn = torch.nn.BatchNorm2d(3, momentum=0.3).double()
    torch_bn.load_state_dict({k.split(".", 1)[1]: torch.from_numpy(np.array(v))
                              for k, v in {**layer.params, **layer.buffers}.items()})
    x = np.random.default_rng(1).standard_normal((2, 3, 4, 5))
    dy = np.random.default_rng(2).standard_normal(x.shape)
    tx = torch.from_numpy(x).requires_grad_(True)
    t_out = torch_bn(tx)
    t_out.backward(torch.from_numpy(dy))
    np.testing.assert_allclose(layer.forward(x, True), t_out.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(layer.backward(dy.copy()), tx.grad.numpy(), rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(layer.grads["0.weight"], torch_bn.weight.grad.numpy(), rtol=1e-10)
    np.testing.assert_allclose(layer.buffers["0.running_var"], torch_bn.running_var.numpy(), rtol=1e-10)
    torch_bn.eval()
    np.testing.assert_allclose(layer.forward(x, False), torch_bn(tx).detach().numpy(), rtol=1e-10, atol=1e-12)
