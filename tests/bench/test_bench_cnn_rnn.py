"""bench_cnn_rnn runs end to end and prints, for a recurrent model, its ratio to PyTorch and its
GEMM floor (bench/recurrent_floor.py); the figures themselves are never asserted."""
from __future__ import annotations

import re

import numpy as np

from bench import bench_cnn_rnn, recurrent_floor


def test_a_recurrent_case_prints_its_ratio_and_its_gemm_floor(capsys):
    bench_cnn_rnn.main(["--only", "lstm", "--samples", "160", "--threads", "1"])
    out = capsys.readouterr().out
    assert "lstm: fused time loops on (cpu_recurrent.fused_gemm, parts of 64 rows)" in out
    assert re.search(r"^lstm\s+ours\s+\d+\.\d+ s\s+pytorch\s+\d+\.\d+ s\s+ratio ours/pytorch\s+\d+\.\d+$", out,
                     re.MULTILINE), out
    assert re.search(r"gemm floor\s+\d+\.\d+ s .*ours/floor\s+\d+\.\d+\s+pytorch/floor\s+\d+\.\d+$", out,
                     re.MULTILINE), out


def test_the_fused_loops_line_says_off_without_numpys_openblas(monkeypatch):
    from worker.engine import cpu_blas  # noqa: PLC0415

    monkeypatch.setattr(cpu_blas, "gemm", lambda dtype: None)  # as on a NumPy built on another BLAS
    assert bench_cnn_rnn.fused_loops_line(1) == (
        "lstm: fused time loops off (cpu_recurrent.fused_gemm, parts of 64 rows; "
        "NumPy's OpenBLAS (libscipy_openblas64_) not found)")


def test_the_fused_loops_line_asks_fused_gemm_under_the_thread_budget(monkeypatch):
    """On 2 threads the batch splits in two parts with serial step kernels (loops on); with the
    parallel step kernel from 2 threads (no split then), fused_gemm says off."""
    from worker.engine import kernel_jit  # noqa: PLC0415

    assert bench_cnn_rnn.fused_loops_line(2).startswith("lstm: fused time loops on (cpu_recurrent.fused_gemm, "
                                                        "parts of 32 rows")
    monkeypatch.setattr(kernel_jit, "PARALLEL_MIN_THREADS", 2)
    monkeypatch.setattr(kernel_jit, "PARALLEL_MIN", 1)
    assert bench_cnn_rnn.fused_loops_line(2) == "lstm: fused time loops off (cpu_recurrent.fused_gemm, parts of 64 rows)"


def test_the_floor_multiplies_the_shapes_each_layer_multiplies(monkeypatch):
    """The recurrent products of one batch's loops, by shape: T-1 forward and T-1 backward (the
    engine makes no dL/dh_{-1}); the GRU's by np.matmul, the LSTM's as its fused loops make them."""
    shapes: list[tuple[tuple[int, ...], tuple[int, ...]]] = []
    real = np.matmul

    def recording(a, b, **kwargs):  # noqa: ANN001, ANN003, ANN202
        shapes.append((a.shape, b.shape))
        return real(a, b, **kwargs)
    arrays = recurrent_floor._arrays("gru", 16, 5, 3, 4)
    assert arrays["gemm"] is None
    monkeypatch.setattr(recurrent_floor.np, "matmul", recording)
    recurrent_floor._loop(arrays, False, split=False)
    recurrent_floor._loop(arrays, True, split=False)
    assert shapes == [((16, 4), (4, 12))] * 4 + [((16, 12), (12, 4))] * 4


def test_the_lstm_floor_makes_its_products_as_the_fused_loops_do():
    arrays = recurrent_floor._arrays("lstm", 16, 5, 3, 4)
    assert arrays["gemm"] is not None
    h, w_t = arrays["h"], arrays["w_hh_t"]
    arrays["out_g"][...] = 0
    recurrent_floor._loop(arrays, False, split=False)  # accumulates as the forward adds into the gates
    np.testing.assert_allclose(arrays["out_g"], sum(h[t] @ w_t for t in range(1, 5)), rtol=1e-5)
    recurrent_floor._loop(arrays, True, split=False)
    np.testing.assert_allclose(arrays["out_h"], arrays["d"][4] @ arrays["w_hh"], rtol=1e-5)
