"""Which time loop the lstm layer runs on NumPy (cpu_recurrent_loops): the fused loops (one
kernel call per part) equal the per-step kernels, run only where every operand their gemm reads
by pointer has the layer's dtype and layout, and are chosen once per loop, before the split."""
from __future__ import annotations

import numpy as np
import pytest

from tests.worker.engine.layer_helpers import build_layer
from tests.worker.engine.test_cpu_recurrent import TOLERANCE, run

pytestmark = pytest.mark.usefixtures("kernel_variant")


def _count_fused_calls(monkeypatch) -> dict[str, int]:
    """Counts the calls of the fused loops (_lstm_forward, _lstm_backward) from now on."""
    from worker.engine import cpu_recurrent  # noqa: PLC0415

    calls = {"forward": 0, "backward": 0}
    for name, key in (("_LSTM_FORWARD", "forward"), ("_LSTM_BACKWARD", "backward")):
        def spy(*args, kernel=getattr(cpu_recurrent, name), key=key):
            calls[key] += 1
            return kernel(*args)
        monkeypatch.setattr(cpu_recurrent, name, spy)
    return calls


# 128: the products in K-chunks; 1: W^T (1, 4), which NumPy calls contiguous with a row stride of 1 element
@pytest.mark.parametrize(("units", "rows"), [(7, 5), (128, 67), (1, 5)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fused_lstm_loops_equal_the_per_step_kernels(dtype, units, rows, kernel_variant, monkeypatch):
    """Forward and backward by _lstm_forward/_lstm_backward (one call per loop, products by cblas)
    against the same layer with NumPy's BLAS hidden (per-step kernels and np.matmul), split in
    two parts of unequal size as on two threads, return_sequences both ways. With the parallel
    step kernel (kernel_variant) the fused loops must not run: then both sides are per-step."""
    from worker.engine import batch_split, cpu_blas  # noqa: PLC0415

    rng = np.random.default_rng(11)
    for return_sequences in (False, True):
        config = {"type": "lstm", "units": units, "return_sequences": return_sequences}
        layers = [build_layer(config, (6, 3), dtype=dtype) for _ in range(2)]
        x = rng.standard_normal((rows, 6, 3)).astype(dtype) * 3  # some gates saturate
        upstream = rng.standard_normal((rows, *layers[0].out_shape)).astype(dtype)
        # monkeypatch.context(): undo() would also undo kernel_variant's settings
        with batch_split.forced(2), monkeypatch.context() as patch:
            calls = _count_fused_calls(patch)
            fused = run(layers[0], x, upstream)
            fused_calls = dict(calls)
            patch.setattr(cpu_blas, "gemm", lambda dtype: None)
            reference = run(layers[1], x, upstream)
            assert calls == fused_calls  # the reference ran no fused loop
        expected = 2 if kernel_variant == "serial" else 0  # one call per part
        assert fused_calls == {"forward": expected, "backward": expected}
        wanted = {"out": reference[0], "dx": reference[1], **reference[2]}
        got = {"out": fused[0], "dx": fused[1], **fused[2]}
        for name, want in wanted.items():  # float32 sums of 400 rows: atol on the array's scale
            atol = TOLERANCE[dtype]["atol"] * max(1.0, np.abs(want).max() * 10)
            np.testing.assert_allclose(got[name], want, rtol=TOLERANCE[dtype]["rtol"], atol=atol, err_msg=name)


def test_the_lstm_asks_for_cblas_before_the_split_in_the_callers_thread(monkeypatch):
    """cpu_blas.gemm (a ctypes lookup on its first call) is resolved once by the caller, never by
    the batch split's helper threads, forward and backward."""
    import threading  # noqa: PLC0415

    from worker.engine import batch_split, cpu_blas  # noqa: PLC0415

    askers, lookup = [], cpu_blas.gemm
    monkeypatch.setattr(cpu_blas, "gemm", lambda dtype: askers.append(threading.current_thread()) or lookup(dtype))
    layer = build_layer({"type": "lstm", "units": 3}, (4, 2))
    rng = np.random.default_rng(14)
    with batch_split.forced(2):
        run(layer, rng.standard_normal((6, 4, 2)), rng.standard_normal((6, 3)))
    assert all(thread is threading.main_thread() for thread in askers)


# W_hh reaches the loops as the layer's float32 copy (LSTM._loop_weights): both loops fused; a float64
# W_ih makes the projections float64, which the forward's gemm would read as float32: that loop per-step
@pytest.mark.parametrize(("suffix", "fused"), [("weight_hh_l0", {"forward": 1, "backward": 1}),
                                               ("weight_ih_l0", {"forward": 0, "backward": 1})])
def test_a_weight_of_another_dtype_reaches_the_fused_loops_only_in_the_layers_dtype(suffix, fused, kernel_variant,
                                                                                    monkeypatch):
    """The fused loops' gemm is chosen by one dtype and reads its operands as raw memory: a float64
    parameter in a float32 layer gives the float32 layer's result, fused only where every operand has its dtype."""
    rng = np.random.default_rng(15)
    layers = [build_layer({"type": "lstm", "units": 5, "return_sequences": True}, (4, 3), dtype=np.float32)
              for _ in range(2)]
    name = layers[0].name(suffix)
    layers[0].params[name] = layers[0].params[name].astype(np.float64)
    x, upstream = rng.standard_normal((6, 4, 3)).astype(np.float32), rng.standard_normal((6, 4, 5)).astype(np.float32)
    calls = _count_fused_calls(monkeypatch)
    mixed = run(layers[0], x, upstream)
    assert calls == (fused if kernel_variant == "serial" else {"forward": 0, "backward": 0})
    assert (layers[0].fused_loop(len(x))[1] is not None) == (calls["forward"] == 1)  # as bench_cnn_rnn asks
    reference = run(layers[1], x, upstream)
    for got, want in zip((*mixed[:2], *mixed[2].values()), (*reference[:2], *reference[2].values())):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("remake", [np.asfortranarray, lambda proj: proj.astype(np.float64)],
                         ids=["not_c_contiguous", "float64"])
def test_projections_the_fused_gemm_cannot_read_by_pointer_take_the_per_step_loop(remake, kernel_variant,
                                                                                 monkeypatch):
    """fused_loop infers the projections' layout from forward; LSTM._run checks the arrays
    themselves: a proj made otherwise (here by a wrapper of _run) runs the per-step loop, with its
    outputs, where fused_loop alone would have fused it."""
    rng = np.random.default_rng(18)
    layers = [build_layer({"type": "lstm", "units": 5, "return_sequences": True}, (4, 3), dtype=np.float32)
              for _ in range(2)]
    for layer in layers:
        layer._run = lambda proj, bias, run=layer._run: run(remake(proj), bias)
    x, upstream = rng.standard_normal((6, 4, 3)).astype(np.float32), rng.standard_normal((6, 4, 5)).astype(np.float32)
    assert (layers[0].fused_loop(len(x))[1] is not None) == (kernel_variant == "serial")
    calls = _count_fused_calls(monkeypatch)
    remade = run(layers[0], x, upstream)
    assert calls["forward"] == 0
    layers[1].fused_loop = lambda n, asked=layers[1].fused_loop: (asked(n)[0], None)  # the per-step forward
    reference = run(layers[1], x, upstream)
    for got, want in zip((*remade[:2], *remade[2].values()), (*reference[:2], *reference[2].values())):
        np.testing.assert_array_equal(got, want)


def test_the_loop_weights_follow_each_change_of_w_hh_between_forwards():
    """W_hh is copied into the loops' arrays on every forward (no cache to go stale): an in-place
    change between two forwards, as an optimizer step or a finite difference makes, reaches the output."""
    rng = np.random.default_rng(17)
    layers = [build_layer({"type": "lstm", "units": 4}, (3, 2)) for _ in range(2)]
    x = rng.standard_normal((5, 3, 2))
    layers[0].forward(x, True)
    for layer in layers:
        layer.params[layer.name("weight_hh_l0")] *= 1.5
    np.testing.assert_array_equal(layers[0].forward(x, True), layers[1].forward(x, True))


@pytest.mark.parametrize(("kind", "loops"), [("lstm", 2), ("gru", 1)])  # the GRU splits its backward loop only
def test_each_split_time_loop_asks_for_its_parts_once(kind, loops, monkeypatch):
    """The LSTM's fused gemm is chosen for the parts' size and batch_split.run takes the same count:
    one parts_for per loop, not one for each."""
    from worker.engine import batch_split  # noqa: PLC0415

    asked, parts_for = [], batch_split.parts_for
    monkeypatch.setattr(batch_split, "parts_for", lambda *args: asked.append(args) or parts_for(*args))
    layer = build_layer({"type": kind, "units": 3}, (4, 2))
    rng = np.random.default_rng(16)
    with batch_split.forced(2):
        run(layer, rng.standard_normal((6, 4, 2)), rng.standard_normal((6, 3)))
    assert asked == [(6,)] * loops
