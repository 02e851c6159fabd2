"""lstm and gru: nn.LSTM / nn.GRU on the base of layers/recurrent.py (parameters, projection,
weight gradients); here the time loops.

LSTM on NumPy: the three sigmoid gates come from one tanh over all four gates, sigmoid(x) =
(tanh(x/2) + 1) / 2, with the halving folded into the weights and biases of their rows (exact:
a power of two). In training each part of the batch runs its whole loop in one kernel call
(cpu_recurrent._lstm_forward: products by NumPy's OpenBLAS, gate math and cell update between
them); otherwise one NumPy tanh over the (N, 4u) gates and the rest in one pass with the cell
update (its array formulation). In float32 a sigmoid gate far below zero does not keep its
tiny true value: 1 + tanh(x/2) rounds to 0 or to a multiple of float32's spacing just below 1,
with NumPy's tanh as with the kernel's rational one (-1 exactly for arguments at or below
-cpu_recurrent.TANH_CLAMP); nothing downstream depends on such a gate's exact value.
"""
from __future__ import annotations

from functools import cached_property
from typing import Any, NamedTuple

import numpy as np

from worker.engine import batch_split
from worker.engine.layers import register
from worker.engine.layers.recurrent import _Recurrent, sigmoid_


class _Loop(NamedTuple):
    """The LSTM forward's arrays on NumPy: hs, cs (T+1, N, u) zero at step 0, tanh_c (T, N, u),
    the loop weights (LSTM._loop_weights; w_hh also the backward's), the parts of the batch and
    the fused loops' gemm (None: the per-step loop)."""

    hs: Any
    cs: Any
    tanh_c: Any
    w_hh: Any
    w_hh_t: Any
    parts: int
    gemm: Any


def _parts(layer: _Recurrent, n: int, backward: bool = False) -> int:
    """How many parts a kernels' time loop (training on NumPy) over n rows runs on: batch_split's
    count where the layer splits that loop (split_loops), else 1. Asked once per loop: the fused
    LSTM loops' gemm is chosen for the parts' size, and batch_split.run takes the same count."""
    return batch_split.parts_for(n) if layer.split_loops[backward] else 1


@register
class LSTM(_Recurrent):
    """Gates i, f, g, o; c_t = f*c_{t-1} + i*g; h_t = o*tanh(c_t).

    The loops keep the gates as (i, f, o, g) so that the three sigmoid gates are one block;
    parameters and gradients stay in PyTorch's (i, f, g, o) order.
    """

    kind = "lstm"
    gates = 4
    split_loops = (True, True)

    @cached_property
    def _order(self) -> Any:
        """Row indices taking PyTorch's gate order (i, f, g, o) to the loops' (i, f, o, g)."""
        u = self.units
        return np.r_[0:2 * u, 3 * u:4 * u, 2 * u:3 * u]

    def _w(self, suffix: str) -> Any:
        return self._p(suffix)[self._order]

    def _to_api(self, rows: Any) -> Any:
        out = self.xp.empty_like(rows)
        out[self._order] = rows
        return out

    def _halved(self, rows: Any) -> Any:
        """Loop-order rows with the sigmoid gates' (the first 3u) halved (NumPy's loop)."""
        rows[:3 * self.units] *= 0.5
        return rows

    def _projection(self) -> tuple[Any, Any]:
        if self.xp is not np:  # CuPy: gpu_recurrent's fused steps take the plain pre-activations
            return super()._projection()
        return self._halved(self._w("weight_ih_l0")), self._halved(self._input_bias())

    def _loop_weights(self) -> tuple[Any, Any]:
        """(W_hh, W_hh^T) of the loops, into scratch once per forward (the weights change every
        training step, so there is nothing to keep between forwards): W_hh in loop gate order
        (4u, u), which the backward multiplies by (the weights change only after it), and its
        transpose (u, 4u) with the sigmoid rows halved, in the layer's dtype whatever the
        parameter's. W^T is a copy, not a view of W: its halved rows differ from W's, which the
        backward needs whole; C-contiguous, as the fused loop's gemm takes it by pointer
        (row-major, untransposed: cpu_recurrent._matmul needs contiguous rows)."""
        u = self.units
        w_hh, w_hh_t = self.scratch("w_hh", (4 * u, u)), self.scratch("w_hh_t", (u, 4 * u))
        np.take(self._p("weight_hh_l0"), self._order, axis=0, out=w_hh, mode="clip")  # clip: unbuffered
        np.copyto(w_hh_t, w_hh.T)
        self._halved(w_hh_t.T)  # a view: the sigmoid gates' columns halved in place
        return w_hh, w_hh_t

    def fused_loop(self, n: int) -> tuple[int, Any]:
        """(parts, gemm) of the training forward's time loop on NumPy over a batch of n: the parts
        of the batch it runs on and cpu_recurrent.fused_gemm for a part, or None: the per-step
        loop. The arrays the fused loop's products take by pointer are the layer's scratch (hs,
        W_hh^T: its dtype, C-contiguous) and the projections, a fresh product of the input (in the
        layer's dtype) by W_ih: C-contiguous, in the wider of the two dtypes (np.matmul), so fused
        only where W_ih's is no wider. _run asks this (then checks those arrays themselves);
        bench_cnn_rnn prints it."""
        from worker.engine import cpu_recurrent  # noqa: PLC0415

        parts = _parts(self, n)
        gemm = cpu_recurrent.fused_gemm(self.dtype, n // parts * self.gates * self.units)
        projections = np.result_type(self.dtype, self._p("weight_ih_l0").dtype)
        return parts, gemm if projections == self.dtype else None

    def _prepare_loop(self, proj: Any) -> _Loop:
        """The NumPy forward's arrays for the time loop over proj, and how it runs (fused_loop in
        training, else one part, per step)."""
        steps, n, _ = proj.shape
        u = self.units
        hs, cs = self.scratch("hs", (steps + 1, n, u)), self.scratch("cs", (steps + 1, n, u))
        hs[0], cs[0] = 0, 0
        w_hh, w_hh_t = self._loop_weights()
        parts, gemm = self.fused_loop(n) if self._kernels else (1, None)
        return _Loop(hs, cs, self.scratch("tanh_c", (steps, n, u)), w_hh, w_hh_t, parts, gemm)

    def _run(self, proj: Any, bias: Any) -> Any:
        """On NumPy where fused_loop allows and the arrays its gemm reads by pointer (proj, W_hh^T,
        hs) are C-contiguous in the layer's dtype: each part's whole loop in one kernel call
        (cpu_recurrent_loops.lstm_forward, adding the bias), else the base's: the bias added, then
        _steps (NumPy) or gpu_recurrent's loop (CuPy)."""
        if self.xp is not np:
            return super()._run(proj, bias)
        loop = self._loop = self._prepare_loop(proj)
        self._gates, self._cs, self._tanh_c = proj, loop.cs, loop.tanh_c  # what the backward reads
        if loop.gemm is None:
            return super()._run(proj, bias)
        from worker.engine import cpu_recurrent, cpu_recurrent_loops  # noqa: PLC0415

        # fused_loop infers proj's dtype from forward's product: a proj made otherwise goes per step
        if not cpu_recurrent.takes_by_pointer(self.dtype, proj, loop.w_hh_t, loop.hs):
            return super()._run(proj, bias)
        batch_split.run(proj.shape[1], lambda lo, hi, part: cpu_recurrent_loops.lstm_forward(
            loop.gemm, proj, bias, loop.w_hh_t, loop.hs, loop.cs, loop.tanh_c, lo, hi), loop.parts)
        return loop.hs

    def _steps(self, proj: Any) -> Any:
        """The per-step loop over proj, its bias added (the arrays as _prepare_loop made them)."""
        steps, n, gh = proj.shape
        u = self.units
        loop = self._loop

        def rows(lo: int, hi: int, part: int) -> None:
            tmp, cell = self.scratch(f"tmp{part}", (hi - lo, gh)), self._cell(part, hi - lo)
            h, c, tc = loop.hs[:, lo:hi], loop.cs[:, lo:hi], loop.tanh_c[:, lo:hi]
            for t in range(steps):
                g = proj[t, lo:hi]  # becomes the activated gates (i, f, o, g) of step t, kept for backward
                if t:
                    np.matmul(h[t], loop.w_hh_t, out=tmp)
                    g += tmp
                np.tanh(g, out=g)
                cell(g, c[t], c[t + 1])
                np.tanh(c[t + 1], out=tc[t])
                np.multiply(g[:, 2 * u:3 * u], tc[t], out=h[t + 1])

        batch_split.run(n, rows, loop.parts)
        return loop.hs

    def _cell(self, part: int, rows: int) -> Any:
        """cell(g, c_prev, c_next) for a part of `rows` rows: the sigmoid gates of g from their
        tanh, then c_next (in training the kernel itself, chosen once per loop)."""
        if self._kernels:
            from worker.engine import cpu_recurrent_loops  # noqa: PLC0415  (Numba: only where training runs)

            return cpu_recurrent_loops.lstm_cell_kernel(rows * self.gates * self.units)
        u, ig = self.units, self.scratch(f"ig{part}", (rows, self.units))

        def cell(g: Any, c_prev: Any, c_next: Any) -> None:
            g[:, :3 * u] *= 0.5
            g[:, :3 * u] += 0.5
            np.multiply(g[:, u:2 * u], c_prev, out=c_next)
            np.multiply(g[:, :u], g[:, 3 * u:], out=ig)
            c_next += ig
        return cell

    def _bptt(self, grad_out: Any) -> tuple[Any, Any]:
        xp, gates, u = self.xp, self._gates, self.units
        steps, n, gh = gates.shape
        dgates, w_hh = self.scratch("dgates", (steps, n, gh)), self._loop.w_hh
        if self._kernels:
            from worker.engine import cpu_recurrent, cpu_recurrent_loops  # noqa: PLC0415

            parts = _parts(self, n, backward=True)  # dgates, w_hh: the fused products' operands
            gemm = cpu_recurrent.fused_gemm(self.dtype, n // parts * gh, dgates, w_hh)
            batch_split.run(n, lambda lo, hi, part: cpu_recurrent_loops.lstm_bptt(self, gemm, grad_out, dgates, w_hh,
                                                                                   lo, hi, part), parts)
            return dgates, dgates
        deriv = self.scratch("deriv", (steps, n, gh))  # d activation / d pre-activation, all gates
        xp.subtract(1, gates, out=deriv)
        deriv *= gates
        xp.multiply(gates[:, :, 3 * u:], gates[:, :, 3 * u:], out=deriv[:, :, 3 * u:])
        xp.subtract(1, deriv[:, :, 3 * u:], out=deriv[:, :, 3 * u:])
        d_tanh_c = self.scratch("d_tanh_c", self._tanh_c.shape)
        xp.multiply(self._tanh_c, self._tanh_c, out=d_tanh_c)
        xp.subtract(1, d_tanh_c, out=d_tanh_c)
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
            if t:  # dL/dh_{-1}: no parameter's input
                xp.matmul(dg, w_hh, out=dh)
        return dgates, dgates


@register
class GRU(_Recurrent):
    """r, z = sigmoid(..); n = tanh(W_in x + b_in + r*(W_hn h + b_hn)); h' = (1-z)*n + z*h."""

    kind = "gru"
    gates = 3
    split_loops = (False, True)

    def _input_bias(self) -> Any:
        return self._p("bias_ih_l0")  # b_hh enters inside the loop: r multiplies W_hn h + b_hn

    def loop_state(self, proj: Any) -> tuple[Any, ...]:
        """(hs with hs[0] = 0, hp_n, tmp, b_hh, W_hh^T) for the time loop over proj (T, N, 3u)."""
        steps, n, gh = proj.shape
        hs, hp_n = self.scratch("hs", (steps + 1, n, self.units)), self.scratch("hp_n", (steps, n, self.units))
        hs[0] = 0
        return hs, hp_n, self.scratch("tmp", (n, gh)), self._p("bias_hh_l0"), self._p("weight_hh_l0").T

    def _steps(self, proj: Any) -> Any:
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
        d_in, d_hid = self.scratch("d_in", (steps, n, gh)), self.scratch("d_hid", (steps, n, gh))
        if self._kernels:
            from worker.engine import cpu_recurrent_loops  # noqa: PLC0415

            batch_split.run(n, lambda lo, hi, part: cpu_recurrent_loops.gru_bptt(self, grad_out, d_in, d_hid, lo, hi,
                                                                                  part), _parts(self, n, backward=True))
            return d_in, d_hid
        deriv = self.scratch("deriv", (steps, n, gh))
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
            if t:
                dh += dhid @ w_hh
        return d_in, d_hid
