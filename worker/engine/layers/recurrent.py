"""rnn (tanh), lstm, gru: nn.RNN / nn.LSTM / nn.GRU, batch_first, one layer, full BPTT.

Parameters are PyTorch's: weight_ih_l0 (G*H, F), weight_hh_l0 (G*H, H), bias_ih_l0, bias_hh_l0
(G*H,), gate blocks stacked in PyTorch's order (LSTM i, f, g, o; GRU r, z, n). Zero initial state.

Speed: the input projection of all T steps is one (T*N, F) @ (F, G*H) product before the time
loop; the loop only does the (N, H) @ (H, G*H) recurrence. The backward loop writes each step's
pre-activation gradients into a preallocated (T, N, G*H) buffer, and the weight gradients and
dL/dx are then single large products over all T*N rows.
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
    """config: units, return_sequences=False. Subclasses implement `_run` and `_bptt`."""

    gates: ClassVar[int] = 1
    use_kernels = True  # lstm/gru training on NumPy runs cpu_recurrent's backward kernels

    def __init__(self, config: dict[str, Any], index: int) -> None:
        super().__init__(config, index)
        self.units = int(config["units"])
        self.return_sequences = bool(config.get("return_sequences", False))
        self._buffers: dict[str, Any] = {}

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

    def _buf(self, key: str, shape: tuple[int, ...]) -> Any:
        """A scratch array reused across batches of the same shape (contents undefined)."""
        buf = self._buffers.get(key)
        if buf is None or buf.shape != shape:
            buf = self._buffers[key] = self.xp.empty(shape, dtype=self.dtype)
        return buf

    def _input_bias(self) -> Any:
        return self._w("bias_ih_l0") + self._w("bias_hh_l0")

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
        proj = self._xt.reshape(steps * n, features) @ self._w("weight_ih_l0").T
        proj += self._input_bias()
        run = self._run if xp is np else partial(gpu_recurrent.run, self)  # CuPy: fused step kernels
        with np.errstate(over="ignore"):  # see sigmoid_
            self._hs = run(proj.reshape(steps, n, -1))  # (T+1, N, H), hs[0] = 0
        if self.return_sequences:
            return xp.ascontiguousarray(self._hs[1:].transpose(1, 0, 2))
        return self._hs[steps].copy()

    def _ones(self, rows: int) -> Any:
        ones = self._buffers.get("ones")
        if ones is None or ones.shape[0] != rows:
            ones = self._buffers["ones"] = self.xp.ones(rows, dtype=self.dtype)
        return ones

    def _add_upstream(self, dh: Any, grad_out: Any, t: int) -> None:
        """dh += dL/dh_t coming from above (every step with return_sequences, else the last)."""
        if self.return_sequences:
            dh += grad_out[:, t]
        elif t == self._hs.shape[0] - 2:
            dh += grad_out

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

    def _run(self, proj: Any) -> Any:
        xp, (steps, n, units) = self.xp, proj.shape
        hs, tmp = self._buf("hs", (steps + 1, n, units)), self._buf("tmp", (n, units))
        hs[0] = 0
        w_hh_t = self._p("weight_hh_l0").T
        for t in range(steps):
            if t:
                xp.matmul(hs[t], w_hh_t, out=tmp)
                proj[t] += tmp
            xp.tanh(proj[t], out=hs[t + 1])
        return hs

    def _bptt(self, grad_out: Any) -> tuple[Any, Any]:
        xp, hs = self.xp, self._hs
        steps, n, units = hs.shape[0] - 1, hs.shape[1], hs.shape[2]
        deriv = self._buf("deriv", (steps, n, units))
        xp.multiply(hs[1:], hs[1:], out=deriv)
        xp.subtract(1, deriv, out=deriv)  # tanh' = 1 - h^2
        dz, w_hh = self._buf("dz", (steps, n, units)), self._p("weight_hh_l0")
        dh = xp.zeros((n, units), dtype=self.dtype)
        for t in range(steps - 1, -1, -1):
            self._add_upstream(dh, grad_out, t)
            xp.multiply(dh, deriv[t], out=dz[t])
            xp.matmul(dz[t], w_hh, out=dh)
        return dz, dz


@register
class LSTM(_Recurrent):
    """Gates i, f, g, o; c_t = f*c_{t-1} + i*g; h_t = o*tanh(c_t).

    The loops keep the gates as (i, f, o, g) so that one sigmoid call covers the three sigmoid
    gates; parameters and gradients stay in PyTorch's (i, f, g, o) order.
    """

    kind = "lstm"
    gates = 4

    def _order(self) -> Any:
        """Row indices taking PyTorch's gate order (i, f, g, o) to the loops' (i, f, o, g)."""
        if "order" not in self._buffers:
            u = self.units
            self._buffers["order"] = np.r_[0:2 * u, 3 * u:4 * u, 2 * u:3 * u]
        return self._buffers["order"]

    def _w(self, suffix: str) -> Any:
        return self._p(suffix)[self._order()]

    def _to_api(self, rows: Any) -> Any:
        out = self.xp.empty_like(rows)
        out[self._order()] = rows
        return out

    def _run(self, proj: Any) -> Any:
        xp, (steps, n, gh) = self.xp, proj.shape
        u = self.units
        hs, cs = self._buf("hs", (steps + 1, n, u)), self._buf("cs", (steps + 1, n, u))
        tanh_c, tmp, ig = self._buf("tanh_c", (steps, n, u)), self._buf("tmp", (n, gh)), self._buf("ig", (n, u))
        hs[0], cs[0] = 0, 0
        w_hh_t = self._w("weight_hh_l0").T
        for t in range(steps):
            g = proj[t]  # becomes the activated gates (i, f, o, g) of step t, kept for backward
            if t:
                xp.matmul(hs[t], w_hh_t, out=tmp)
                g += tmp
            sigmoid_(xp, g[:, :3 * u])
            xp.tanh(g[:, 3 * u:], out=g[:, 3 * u:])
            xp.multiply(g[:, u:2 * u], cs[t], out=cs[t + 1])
            xp.multiply(g[:, :u], g[:, 3 * u:], out=ig)
            cs[t + 1] += ig
            xp.tanh(cs[t + 1], out=tanh_c[t])
            xp.multiply(g[:, 2 * u:3 * u], tanh_c[t], out=hs[t + 1])
        self._gates, self._cs, self._tanh_c = proj, cs, tanh_c
        return hs

    def _bptt(self, grad_out: Any) -> tuple[Any, Any]:
        xp, gates, u = self.xp, self._gates, self.units
        steps, n, gh = gates.shape
        if self._kernels:
            from worker.engine import cpu_recurrent  # noqa: PLC0415  (Numba: only where training runs)

            dgates = cpu_recurrent.lstm_bptt(self, grad_out, self._buf("dgates", (steps, n, gh)))
            return dgates, dgates
        deriv = self._buf("deriv", (steps, n, gh))  # d activation / d pre-activation, all gates
        xp.subtract(1, gates, out=deriv)
        deriv *= gates
        xp.multiply(gates[:, :, 3 * u:], gates[:, :, 3 * u:], out=deriv[:, :, 3 * u:])
        xp.subtract(1, deriv[:, :, 3 * u:], out=deriv[:, :, 3 * u:])
        d_tanh_c = self._buf("d_tanh_c", self._tanh_c.shape)
        xp.multiply(self._tanh_c, self._tanh_c, out=d_tanh_c)
        xp.subtract(1, d_tanh_c, out=d_tanh_c)
        dgates, w_hh = self._buf("dgates", (steps, n, gh)), self._w("weight_hh_l0")
        dh, dc = xp.zeros((n, u), dtype=self.dtype), xp.zeros((n, u), dtype=self.dtype)
        for t in range(steps - 1, -1, -1):
            self._add_upstream(dh, grad_out, t)
            i, f, o, g = (gates[t, :, k * u:(k + 1) * u] for k in range(4))
            dg = dgates[t]
            xp.multiply(dh, self._tanh_c[t], out=dg[:, 2 * u:3 * u])  # dL/do
            xp.multiply(dh, o, out=dh)  # dh is rebuilt by the matmul below: use it as scratch
            dh *= d_tanh_c[t]
            dc += dh
            xp.multiply(dc, g, out=dg[:, :u])  # dL/di
            xp.multiply(dc, self._cs[t], out=dg[:, u:2 * u])  # dL/df
            xp.multiply(dc, i, out=dg[:, 3 * u:])  # dL/dg
            dc *= f
            dg *= deriv[t]
            xp.matmul(dg, w_hh, out=dh)
        return dgates, dgates


@register
class GRU(_Recurrent):
    """r, z = sigmoid(..); n = tanh(W_in x + b_in + r*(W_hn h + b_hn)); h' = (1-z)*n + z*h."""

    kind = "gru"
    gates = 3

    def _input_bias(self) -> Any:
        return self._p("bias_ih_l0")  # b_hh enters inside the loop: r multiplies W_hn h + b_hn

    def loop_state(self, proj: Any) -> tuple[Any, ...]:
        """(hs with hs[0] = 0, hp_n, tmp, b_hh, W_hh^T) for the time loop over proj (T, N, 3u)."""
        steps, n, gh = proj.shape
        hs, hp_n = self._buf("hs", (steps + 1, n, self.units)), self._buf("hp_n", (steps, n, self.units))
        hs[0] = 0
        return hs, hp_n, self._buf("tmp", (n, gh)), self._p("bias_hh_l0"), self._p("weight_hh_l0").T

    def _run(self, proj: Any) -> Any:
        xp, steps, u = self.xp, proj.shape[0], self.units
        hs, hp_n, tmp, b_hh, w_hh_t = self.loop_state(proj)
        for t in range(steps):
            g = proj[t]  # becomes r, z, n of step t
            if t:
                xp.matmul(hs[t], w_hh_t, out=tmp)
                tmp += b_hh
            else:
                tmp[...] = b_hh
            g[:, :2 * u] += tmp[:, :2 * u]
            sigmoid_(xp, g[:, :2 * u])
            hp_n[t] = tmp[:, 2 * u:]
            g[:, 2 * u:] += g[:, :u] * hp_n[t]
            xp.tanh(g[:, 2 * u:], out=g[:, 2 * u:])
            xp.subtract(hs[t], g[:, 2 * u:], out=hs[t + 1])
            hs[t + 1] *= g[:, u:2 * u]
            hs[t + 1] += g[:, 2 * u:]
        self._gates, self._hp_n = proj, hp_n
        return hs

    def _bptt(self, grad_out: Any) -> tuple[Any, Any]:
        xp, gates, hs, u = self.xp, self._gates, self._hs, self.units
        steps, n, gh = gates.shape
        d_in, d_hid = self._buf("d_in", (steps, n, gh)), self._buf("d_hid", (steps, n, gh))
        if self._kernels:
            from worker.engine import cpu_recurrent  # noqa: PLC0415

            cpu_recurrent.gru_bptt(self, grad_out, d_in, d_hid)
            return d_in, d_hid
        deriv = self._buf("deriv", (steps, n, gh))
        xp.subtract(1, gates, out=deriv)
        deriv *= gates
        xp.multiply(gates[:, :, 2 * u:], gates[:, :, 2 * u:], out=deriv[:, :, 2 * u:])
        xp.subtract(1, deriv[:, :, 2 * u:], out=deriv[:, :, 2 * u:])
        w_hh, dh = self._p("weight_hh_l0"), xp.zeros((n, u), dtype=self.dtype)
        for t in range(steps - 1, -1, -1):
            self._add_upstream(dh, grad_out, t)
            r, z, new = (gates[t, :, k * u:(k + 1) * u] for k in range(3))
            di, dhid = d_in[t], d_hid[t]
            xp.subtract(hs[t], new, out=di[:, u:2 * u])
            di[:, u:2 * u] *= dh  # dL/dz
            xp.subtract(1, z, out=di[:, 2 * u:])
            di[:, 2 * u:] *= dh  # dL/dn
            di[:, 2 * u:] *= deriv[t, :, 2 * u:]  # dL/d(n pre-activation)
            xp.multiply(di[:, 2 * u:], self._hp_n[t], out=di[:, :u])  # dL/dr
            di[:, :2 * u] *= deriv[t, :, :2 * u]
            dhid[:, :2 * u] = di[:, :2 * u]
            xp.multiply(di[:, 2 * u:], r, out=dhid[:, 2 * u:])
            dh *= z  # the direct path h_{t-1} -> h_t
            dh += dhid @ w_hh
        return d_in, d_hid
