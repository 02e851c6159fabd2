"""rnn (tanh), and the base of lstm and gru (layers/gated.py): nn.RNN / nn.LSTM / nn.GRU,
batch_first, one layer, full BPTT.

Parameters are PyTorch's: weight_ih_l0 (G*H, F), weight_hh_l0 (G*H, H), bias_ih_l0, bias_hh_l0
(G*H,), gate blocks stacked in PyTorch's order (LSTM i, f, g, o; GRU r, z, n). Zero initial state.

Speed: the input projection of all T steps is one (T*N, F) @ (F, G*H) product before the time
loop; the loop only does the (N, H) @ (H, G*H) recurrence. The backward loop writes each step's
pre-activation gradients into a preallocated (T, N, G*H) buffer, and the weight gradients and
dL/dx are then single large products over all T*N rows. In training on NumPy, lstm and gru run
their time loops on the parts of the batch at once when the thread budget allows (batch_split:
sequences are independent, so one split per loop, each part its own rows of every buffer).
"""
from __future__ import annotations

import math
from functools import partial
from typing import Any, ClassVar

import numpy as np

from worker.engine import gpu_recurrent
from worker.engine.backend import to_device
from worker.engine.layers import Layer, register
from worker.engine.layers.base import BuildContext, ShapeError

SUFFIXES = ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")


def sigmoid_(xp: Any, a: Any) -> None:
    """In-place 1 / (1 + exp(-a)): about 2x faster than via tanh on NumPy (bench_cnn_rnn).
    exp(-a) overflows to inf below about -88 (float32) and the result is then exactly 0, as it
    should be: callers run this under np.errstate(over="ignore")."""
    xp.negative(a, out=a)
    xp.exp(a, out=a)
    a += 1
    xp.reciprocal(a, out=a)


class _Recurrent(Layer):
    """config: units, return_sequences=False. Subclasses implement `_steps` and `_bptt`."""

    gates: ClassVar[int] = 1
    use_kernels = True  # lstm/gru training on NumPy runs cpu_recurrent's backward kernels
    # (forward, backward): whether that time loop runs on batch_split's parts in training on NumPy
    split_loops: ClassVar[tuple[bool, bool]] = (False, False)

    def __init__(self, config: dict[str, Any], index: int) -> None:
        super().__init__(config, index)
        self.units = int(config["units"])
        self.return_sequences = bool(config.get("return_sequences", False))
        self._ones_array: Any = None

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(input_shape) != 2:
            raise ShapeError(f"layer {self.index} ({self.kind}): a recurrent layer needs (T, F) "
                             f"input per sample, got shape {list(input_shape)}; set input_shape "
                             f"to [time steps, features]")
        if self.units < 1:
            raise ShapeError(f"layer {self.index} ({self.kind}): units must be positive")
        return (input_shape[0], self.units) if self.return_sequences else (self.units,)

    def n_params(self, input_shape: tuple[int, ...]) -> int:
        gh = self.gates * self.units
        return gh * (input_shape[-1] + self.units + 2)

    def build(self, input_shape: tuple[int, ...], ctx: BuildContext) -> tuple[int, ...]:
        out = super().build(input_shape, ctx)
        gh, bound = self.gates * self.units, 1.0 / math.sqrt(self.units)
        shapes = ((gh, input_shape[-1]), (gh, self.units), (gh,), (gh,))
        self.params = {self.name(suffix): to_device(ctx.init_rng.uniform(-bound, bound, shape),
                                                    ctx.xp, ctx.dtype)
                       for suffix, shape in zip(SUFFIXES, shapes)}
        return out

    def _p(self, suffix: str) -> Any:
        return self.params[self.name(suffix)]

    def _input_bias(self) -> Any:
        return self._w("bias_ih_l0") + self._w("bias_hh_l0")

    def _projection(self) -> tuple[Any, Any]:
        """(W_ih, bias) of the input projection before the time loop (the LSTM scales rows on NumPy)."""
        return self._w("weight_ih_l0"), self._input_bias()

    def _w(self, suffix: str) -> Any:
        """A parameter in the gate order the loops use (PyTorch's, unless a subclass reorders)."""
        return self._p(suffix)

    def _to_api(self, rows: Any) -> Any:
        """A gradient with gate rows in the loops' order -> PyTorch's order."""
        return rows

    def forward(self, x: Any, training: bool) -> Any:
        """x (N, T, F) -> (N, T, H) with return_sequences, else the last step (N, H)."""
        xp = self.xp
        self._kernels = training and xp is np and self.use_kernels
        n, steps, features = x.shape
        self._xt = xp.ascontiguousarray(x.transpose(1, 0, 2), dtype=self.dtype)  # (T, N, F)
        w_ih, bias = self._projection()
        proj = (self._xt.reshape(steps * n, features) @ w_ih.T).reshape(steps, n, -1)
        with np.errstate(over="ignore"):  # see sigmoid_
            self._hs = self._run(proj, bias)  # (T+1, N, H), hs[0] = 0
        if self.return_sequences:
            return xp.ascontiguousarray(self._hs[1:].transpose(1, 0, 2))
        return self._hs[steps].copy()

    def _run(self, proj: Any, bias: Any) -> Any:
        """hs (T+1, N, H) from the input projections proj (T, N, G*H) and their bias: the bias
        added, then the time loop, `_steps(proj)` on NumPy, on CuPy gpu_recurrent's fused step
        kernels (the LSTM's own _run takes its fused loop on NumPy before this, layers/gated.py)."""
        proj += bias
        if self.xp is not np:
            return gpu_recurrent.run(self, proj)
        return self._steps(proj)

    def _ones(self, rows: int) -> Any:
        """`rows` ones (the bias gradients' GEMV), from one array grown to the largest batch."""
        ones = self._ones_array
        if ones is None or ones.shape[0] < rows:
            ones = self._ones_array = self.xp.ones(rows, dtype=self.dtype)
        return ones[:rows]

    def _add_upstream(self, dh: Any, grad_out: Any, t: int, lo: int = 0) -> None:
        """dh += dL/dh_t coming from above (every step with return_sequences, else the last), for
        the batch rows lo:lo+len(dh)."""
        rows = slice(lo, lo + dh.shape[0])
        if self.return_sequences:
            dh += grad_out[rows, t]
        elif t == self._hs.shape[0] - 2:
            dh += grad_out[rows]

    def backward(self, grad_out: Any, need_input_grad: bool = True) -> Any:
        """grad_out (N, T, H) or (N, H) -> dL/dx (N, T, F); fills the four parameter grads."""
        xp = self.xp
        steps, n, features = self._xt.shape
        bptt = self._bptt if xp is np else partial(gpu_recurrent.bptt, self)
        d_in, d_hid = bptt(grad_out)  # (T, N, G*H): pre-activation grads, input / hidden side
        gh = d_in.shape[-1]
        d_in2, d_hid2 = d_in.reshape(steps * n, gh), d_hid.reshape(steps * n, gh)
        h_prev = self._hs[:-1].reshape(steps * n, self.units)
        ones = self._ones(steps * n)
        bias_in = ones @ d_in2
        self.grads = {
            self.name("weight_ih_l0"): self._to_api(d_in2.T @ self._xt.reshape(steps * n, features)),
            self.name("weight_hh_l0"): self._to_api(d_hid2.T @ h_prev),
            self.name("bias_ih_l0"): self._to_api(bias_in),
            self.name("bias_hh_l0"): self._to_api(bias_in.copy() if d_hid is d_in else ones @ d_hid2),
        }
        if not need_input_grad:
            return None
        dx = (d_in2 @ self._w("weight_ih_l0")).reshape(steps, n, features)
        return xp.ascontiguousarray(dx.transpose(1, 0, 2))


@register
class SimpleRNN(_Recurrent):
    """h_t = tanh(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)."""

    kind = "rnn"
    gates = 1

    def _steps(self, proj: Any) -> Any:
        xp, (steps, n, units) = self.xp, proj.shape
        hs, tmp = self.scratch("hs", (steps + 1, n, units)), self.scratch("tmp", (n, units))
        hs[0] = 0
        w_hh_t = np.ascontiguousarray(self._p("weight_hh_l0").T)  # stored, as the LSTM's (layers/gated.py)
        for t in range(steps):
            if t:
                xp.matmul(hs[t], w_hh_t, out=tmp)
                proj[t] += tmp
            xp.tanh(proj[t], out=hs[t + 1])
        return hs

    def _bptt(self, grad_out: Any) -> tuple[Any, Any]:
        xp, hs = self.xp, self._hs
        steps, n, units = hs.shape[0] - 1, hs.shape[1], hs.shape[2]
        deriv = self.scratch("deriv", (steps, n, units))
        xp.multiply(hs[1:], hs[1:], out=deriv)
        xp.subtract(1, deriv, out=deriv)  # tanh' = 1 - h^2
        dz, w_hh = self.scratch("dz", (steps, n, units)), self._p("weight_hh_l0")
        dh = xp.zeros((n, units), dtype=self.dtype)
        for t in range(steps - 1, -1, -1):
            self._add_upstream(dh, grad_out, t)
            xp.multiply(dh, deriv[t], out=dz[t])
            if t:  # dL/dh_{-1}: no parameter's input
                xp.matmul(dz[t], w_hh, out=dh)
        return dz, dz
