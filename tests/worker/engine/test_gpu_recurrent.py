"""gpu_recurrent's step kernels against the NumPy step they replace (marked `gpu`: float64 to
1e-10 relative, float32 to float32 tolerance, NaN and inf included), and its time loops on
NumPy with each kernel swapped for its reference (unmarked: against the layers' own loops)."""
from __future__ import annotations

import numpy as np
import pytest

from tests.worker.engine.gpu_helpers import DTYPES, close, sample
from worker.engine import gpu_recurrent


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("first", [True, False])
def test_lstm_and_gru_step_forward_equal_the_layer_loop(cp, first, dtype):
    n, u = 33, 9
    for gates_n, run in ((4, "lstm"), (3, "gru")):
        gates, hh = sample((n, gates_n * u), dtype, seed=20), sample((n, gates_n * u), dtype, seed=21)
        state = sample((n, u), dtype, seed=22, special=False)
        hh_host, hh_dev = (None, None) if first else (hh, cp.asarray(hh))
        g_dev, outs = cp.asarray(gates), [cp.empty((n, u), dtype) for _ in range(3)]
        with np.errstate(all="ignore"):
            if run == "lstm":
                ref = gpu_recurrent.reference_lstm_forward(gates, hh_host, state)
                gpu_recurrent.lstm_forward(g_dev, hh_dev, cp.asarray(state), *outs)
            else:
                b_hh = sample((gates_n * u,), dtype, seed=23, special=False)
                ref = gpu_recurrent.reference_gru_forward(gates, hh_host, b_hh, state)
                gpu_recurrent.gru_forward(g_dev, hh_dev, cp.asarray(b_hh), cp.asarray(state), *outs[:2])
                outs = outs[:2]
        for got, want in zip([g_dev, *outs], ref, strict=True):
            close(got, want, dtype)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES)
def test_lstm_gru_and_rnn_step_backward_equal_the_cpu_formulas(cp, dtype):
    n, u = 33, 9
    dh, state, aux = (sample((n, u), dtype, seed=s, special=s == 30) for s in (30, 31, 32))
    lstm_gates = 1 / (1 + np.exp(-sample((n, 4 * u), dtype, seed=33, special=False)))
    dc = sample((n, u), dtype, seed=34, special=False)
    ref_dgates, ref_dc = gpu_recurrent.reference_lstm_backward(lstm_gates, state, np.tanh(aux), dh, dc)
    dgates, dc_dev = cp.empty(lstm_gates.shape, dtype), cp.asarray(dc)
    gpu_recurrent.lstm_backward(cp.asarray(lstm_gates), cp.asarray(state), cp.asarray(np.tanh(aux)),
                                cp.asarray(dh), dc_dev, dgates)
    close(dgates, ref_dgates, dtype)
    close(dc_dev, ref_dc, dtype)
    gru_gates = lstm_gates[:, :3 * u].copy()
    ref_in, ref_hid, ref_dh = gpu_recurrent.reference_gru_backward(gru_gates, state, aux, dh)
    d_in, d_hid, dh_dev = cp.empty(gru_gates.shape, dtype), cp.empty(gru_gates.shape, dtype), cp.asarray(dh)
    gpu_recurrent.gru_backward(cp.asarray(gru_gates), cp.asarray(state), cp.asarray(aux), dh_dev, d_in, d_hid)
    for got, want in ((d_in, ref_in), (d_hid, ref_hid), (dh_dev, ref_dh)):
        close(got, want, dtype)
    h, dz = np.tanh(state), cp.empty((n, u), dtype)
    gpu_recurrent.rnn_backward(cp.asarray(dh), cp.asarray(h), dz)
    close(dz, dh * (1 - h * h), dtype)
    h_dev = cp.empty((n, u), dtype)
    gpu_recurrent.rnn_forward(cp.asarray(aux), cp.asarray(state), h_dev)
    close(h_dev, np.tanh(aux + state), dtype)


def _kernels_by_their_references(monkeypatch) -> None:
    """gpu_recurrent's step kernels replaced by their NumPy references writing the same outputs."""
    def lstm_forward(gates, hh, c_prev, c, tanh_c, h):
        for out, value in zip((gates, c, tanh_c, h), gpu_recurrent.reference_lstm_forward(gates, hh, c_prev)):
            out[...] = value

    def lstm_backward(gates, c_prev, tanh_c, dh, dc, dgates):
        dgates[...], dc[...] = gpu_recurrent.reference_lstm_backward(gates, c_prev, tanh_c, dh, dc)

    def gru_forward(gates, hh, b_hh, h_prev, hp_n, h):
        for out, value in zip((gates, hp_n, h), gpu_recurrent.reference_gru_forward(gates, hh, b_hh, h_prev)):
            out[...] = value

    def gru_backward(gates, h_prev, hp_n, dh, d_in, d_hid):
        d_in[...], d_hid[...], dh[...] = gpu_recurrent.reference_gru_backward(gates, h_prev, hp_n, dh)

    for name, fake in (("lstm_forward", lstm_forward), ("lstm_backward", lstm_backward),
                       ("gru_forward", gru_forward), ("gru_backward", gru_backward)):
        monkeypatch.setattr(gpu_recurrent, name, fake)
    monkeypatch.setattr(gpu_recurrent, "rnn_forward",
                        lambda proj, hh, h: np.tanh(proj if hh is None else proj + hh, out=h))
    monkeypatch.setattr(gpu_recurrent, "rnn_backward", lambda dh, h, dz: np.multiply(dh, 1 - h * h, out=dz))


@pytest.mark.parametrize("return_sequences", [True, False])
@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
def test_the_gpu_time_loops_with_reference_steps_equal_the_layers_own_loops(monkeypatch, kind, return_sequences):
    """The loops around the step kernels (state, buffers, recurrence products) on NumPy, each
    kernel replaced by its reference: the layer's outputs, dL/dx and weight gradients match."""
    from worker.engine.layers import BuildContext, layer_class  # noqa: PLC0415
    from worker.engine.layers.recurrent import _Recurrent  # noqa: PLC0415

    _kernels_by_their_references(monkeypatch)
    rng = np.random.default_rng(40)
    x = rng.normal(size=(6, 5, 3))
    results = []
    for on_gpu_loops in (False, True):
        layer = layer_class(kind)({"type": kind, "units": 4, "return_sequences": return_sequences}, 0)
        layer.build((5, 3), BuildContext(np, np.float64, np.random.default_rng(0), None))
        layer.use_kernels = False
        if on_gpu_loops:
            # _Recurrent._run adds the bias, as on CuPy, then the loop
            monkeypatch.setattr(layer, "_steps", lambda proj, layer=layer: gpu_recurrent.run(layer, proj))
            monkeypatch.setattr(layer, "_bptt", lambda grad, layer=layer: gpu_recurrent.bptt(layer, grad))
            # the plain projection, as on CuPy (the LSTM's NumPy loop takes its sigmoid rows halved)
            monkeypatch.setattr(layer, "_projection", lambda layer=layer: _Recurrent._projection(layer))
        out = layer.forward(x, True).copy()
        dx = layer.backward(np.random.default_rng(41).normal(size=out.shape), True)
        results.append((out, dx, {k: g.copy() for k, g in layer.grads.items()}))
    (out, dx, grads), (gpu_out, gpu_dx, gpu_grads) = results
    np.testing.assert_allclose(gpu_out, out, rtol=1e-12)
    np.testing.assert_allclose(gpu_dx, dx, rtol=1e-10, atol=1e-14)
    for name, grad in grads.items():
        np.testing.assert_allclose(gpu_grads[name], grad, rtol=1e-10, atol=1e-14)
