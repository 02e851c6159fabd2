"""`python -m bench gpu` where no CUDA GPU is usable: it says so, measures nothing and exits 0
(the figures themselves are never asserted: speed is not a test)."""
from __future__ import annotations

from bench import bench_gpu


def test_without_a_gpu_it_says_so_and_exits_0(monkeypatch, capsys):
    monkeypatch.setattr(bench_gpu, "gpu_available", lambda: False)
    monkeypatch.setattr(bench_gpu, "run_case", lambda *a: (_ for _ in ()).throw(AssertionError("ran a case")))
    assert bench_gpu.main(["gpu"]) == 0
    assert "no CUDA GPU with CuPy in this process: skipped (nothing measured)" in capsys.readouterr().out


def test_ours_times_the_epochs_after_the_warm_up_on_any_device():
    x, y, layers = bench_gpu.case_data("mlp128", 256)
    assert x.shape == (256, 784) and y.max() < 10
    assert bench_gpu.ours(layers, x, y, 128, 3, "cpu") > 0  # the median of epochs 2 and 3
