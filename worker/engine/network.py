"""Network: a spec's layers built on one array module, with PyTorch's parameter names (§4).

    net = Network.from_spec(spec, input_shape=(64,), seed=0, dtype="float32", device="cpu")
    loss, grads = net.loss_and_grads(X, y)   # copies of the gradients, l2 term included
    history = net.fit(X, y, on_epoch=cb, should_stop=stop, resume=state)  # see training.py
    probs = net.predict(X)                   # host NumPy array
    net.save(path); net = Network.load(path)

`input_shape` and the output width (last dense `units`) may be left for the first `fit` (or
`loss_and_grads`) to infer from X and y: number of classes (max label + 1) for cross_entropy,
y.shape[1] (or 1) otherwise. seed/dtype/device default to the spec's ("auto" -> gpu when
usable). For cross_entropy (softmax) and binary_cross_entropy (sigmoid) the output layer runs
on logits in training and the loss is computed from them; `predict` applies softmax/sigmoid.
"""
from __future__ import annotations

from typing import IO, Any

import numpy as np

from worker.engine import io, threads, training
from worker.engine.activations import get_activation
from worker.engine.backend import get_array_module, resolve_device, to_device, to_numpy
from worker.engine.layers import BuildContext, layer_class
from worker.engine.losses import get_loss
from worker.engine.spec import validate_spec

PREDICT_CHUNK = 4096


class Network:
    def __init__(self, spec: dict[str, Any], *, input_shape: tuple[int, ...] | None = None,
                 seed: int | None = None, dtype: str | None = None, device: str | None = None) -> None:
        """`spec` must already be normalised (use `from_spec` for raw specs)."""
        self.spec = spec
        self.seed = int(spec["seed"] if seed is None else seed)
        self.dtype = np.dtype(dtype or spec["dtype"])
        self.device = resolve_device(device or spec["device"])
        self.xp = get_array_module(self.device)
        self.loss = get_loss(spec["loss"])
        self.output_activation = get_activation(self.loss.output_activation) if self.loss.from_logits else None
        self.layers: list[Any] = []
        self.params: dict[str, Any] = {}
        self.buffers: dict[str, Any] = {}
        self.input_shape: tuple[int, ...] | None = None
        self.n_threads = threads.configured_threads()
        self.train_state: training.TrainState | None = None
        if input_shape is not None and self._output_units() is not None:
            self.build(input_shape)

    @classmethod
    def from_spec(cls, spec: dict[str, Any], input_shape: tuple[int, ...] | None = None, seed: int | None = None,
                  dtype: str | None = None, device: str | None = None, n_outputs: int | None = None) -> Network:
        """Validates (raises SpecError) and builds when the shapes are known."""
        normalised = validate_spec(spec, input_shape=input_shape, n_outputs=n_outputs)
        return cls(normalised, input_shape=input_shape, seed=seed, dtype=dtype, device=device)

    # --- building -------------------------------------------------------------------------
    def _output_units(self) -> int | None:
        dense = [cfg for cfg in self.spec["layers"] if cfg["type"] == "dense"]
        return dense[-1]["units"] if dense else 0

    def _infer_output_units(self, y: Any) -> None:
        if self._output_units() is not None:
            return
        y = to_numpy(y)
        if self.spec["loss"] == "cross_entropy":
            units = int(y.max()) + 1
        else:
            units = int(y.shape[1]) if y.ndim == 2 else 1
        self.spec = validate_spec(self.spec, n_outputs=units)

    def ensure_built(self, X: Any, y: Any = None) -> None:
        if self.layers:
            return
        if y is not None:
            self._infer_output_units(y)
        if self._output_units() is None:
            raise ValueError("the output layer's units are unknown: pass n_outputs or fit on targets first")
        self.build(tuple(int(d) for d in np.shape(X)[1:]))

    def build(self, input_shape: tuple[int, ...]) -> None:
        self.spec = validate_spec(self.spec, input_shape=input_shape)
        xp = self.xp
        ctx = BuildContext(xp=xp, dtype=self.dtype.type, init_rng=np.random.default_rng(self.seed),
                           rng=xp.random.default_rng(self.seed))
        shape = self.input_shape = tuple(input_shape)
        self.layers = []
        for i, cfg in enumerate(self.spec["layers"]):
            layer = layer_class(cfg["type"])(cfg, i)
            shape = layer.build(shape, ctx)
            self.layers.append(layer)
        if self.loss.from_logits:
            self.layers[-1].set_activation("linear")
        self._flatten_params()
        # Filled in place: a dict taken from `params`/`buffers` before the build stays live.
        self.buffers.clear()
        self.buffers.update((k, v) for layer in self.layers for k, v in layer.buffers.items())
        self.l2_names = [n for layer in self.layers for n in layer.l2_names()]

    def _flatten_params(self) -> None:
        """Moves every param into one contiguous buffer `flat_params` and every gradient into
        `flat_grads` (total,); the layers and `params`/`grad_views` keep views, so an optimizer
        step, gradient clipping or an l2 pass can run as a few large vectorised calls."""
        xp = self.xp
        total = sum(int(p.size) for layer in self.layers for p in layer.params.values())
        self.flat_params, self.flat_grads = xp.empty(total, self.dtype), xp.zeros(total, self.dtype)
        self.params.clear()
        self.grad_views, offset, starts = {}, 0, [0]
        for layer in self.layers:
            for name, p in layer.params.items():
                end = offset + int(p.size)
                starts.append(end)
                view = self.flat_params[offset:end].reshape(p.shape)
                view[...] = p
                layer.params[name] = self.params[name] = view
                layer.grads[name] = self.grad_views[name] = self.flat_grads[offset:end].reshape(p.shape)
                offset = end
            layer.bind_params()
        self.flat_bounds = np.asarray(starts, np.int64)  # param k is flat[bounds[k]:bounds[k+1]]

    # --- passes ---------------------------------------------------------------------------
    def forward(self, x: Any, training: bool) -> Any:
        """x (N, *input_shape) -> output (N, K); logits for a fused softmax/sigmoid output."""
        for layer in self.layers:
            x = layer.forward(x, training)
        return x

    def backward(self, grad: Any) -> dict[str, Any]:
        """Backpropagates dL/d(output); returns the (live) gradient views into `flat_grads` by
        name, copying in any gradient a layer returned as a new array (conv, recurrent)."""
        last = len(self.layers) - 1
        for k in range(last, -1, -1):
            grad = self.layers[k].backward(grad, k > 0)
        views = self.grad_views
        for layer in self.layers:
            for name, g in layer.grads.items():
                if g is not views[name]:
                    views[name][...] = g
        return views

    def targets(self, y: Any) -> Any:
        """y on the device: int64 class indices for cross_entropy, the network's dtype otherwise."""
        if self.spec["loss"] == "cross_entropy":
            y_host = to_numpy(y)
            if y_host.dtype.kind not in "iu" and not np.all(np.mod(y_host, 1) == 0):
                raise ValueError("cross_entropy needs integer class labels")
            n_classes = self._output_units()
            if y_host.size and n_classes and (y_host.min() < 0 or y_host.max() >= n_classes):
                raise ValueError(f"cross_entropy class labels must be in 0..{n_classes - 1} (the output layer's "
                                 f"units); got {y_host.min()}..{y_host.max()}")
            return to_device(y_host.reshape(-1), self.xp, np.int64)
        return self.xp.ascontiguousarray(to_device(y, self.xp, self.dtype))

    def inputs(self, X: Any) -> Any:
        return self.xp.ascontiguousarray(to_device(X, self.xp, self.dtype))

    def add_l2(self, grads: dict[str, Any], value: Any) -> Any:
        """Adds l2 * W to each weight's gradient; returns value + l2/2 * sum(W**2)."""
        l2 = self.spec["l2"]
        if not l2:
            return value
        xp = self.xp
        for name in self.l2_names:
            w = self.params[name].reshape(-1)
            grads[name] += l2 * self.params[name]
            value = value + 0.5 * l2 * xp.dot(w, w)
        return value

    def loss_and_grads(self, X: Any, y: Any) -> tuple[float, dict[str, Any]]:
        """Training-mode forward and backward on one batch: (loss, copies of the gradients)."""
        self.ensure_built(X, y)
        out = self.forward(self.inputs(X), True)
        value, grad = self.loss.value_and_grad(out, self.targets(y))
        grads = self.backward(grad)
        value = self.add_l2(grads, value)
        return float(value), {k: g.copy() for k, g in grads.items()}

    def predict(self, X: Any, batch_size: int = PREDICT_CHUNK) -> np.ndarray:
        """Eval-mode outputs as a host array (N, K): probabilities for softmax/sigmoid outputs."""
        if not self.layers:
            raise ValueError("the network is not built yet: fit it first")
        X = self.inputs(X)
        chunks = []
        for start in range(0, X.shape[0], batch_size):
            out = self.forward(X[start:start + batch_size], False)
            out = self.output_activation.forward(out) if self.output_activation else out.copy()
            chunks.append(to_numpy(out))
        return np.concatenate(chunks) if chunks else np.zeros((0, *self.layers[-1].out_shape), self.dtype)

    # --- training, state and files ----------------------------------------------------------
    def fit(self, X: Any, y: Any, on_epoch: Any = None, should_stop: Any = None,
            resume: dict[str, np.ndarray] | None = None, on_batch: Any = None) -> training.History:
        return training.fit(self, X, y, on_epoch=on_epoch, should_stop=should_stop, resume=resume,
                            on_batch=on_batch)

    def state_dict(self) -> dict[str, Any]:
        """Parameters and buffers (batchnorm running statistics) under PyTorch's state_dict
        names: what `torch.nn.Module.load_state_dict` takes strictly. `params` alone is the
        trainable part, as CONTRACT §4 defines it."""
        return {**self.params, **self.buffers}

    def training_state(self) -> dict[str, np.ndarray]:
        return training.training_state(self)

    def save(self, file: str | IO[bytes]) -> None:
        io.save(self, file)

    @classmethod
    def load(cls, file: str | IO[bytes], device: str = "cpu") -> Network:
        return io.load(cls, file, device=device)
