"""`make bench`'s MLP benchmark runs end to end and prints its ratios (a smoke run on 10,000
rows; the figures themselves are never asserted: speed is not a test), and the thread counts
the engine benchmarks compare."""
from __future__ import annotations

import re

import pytest

from bench import bench_mlp, thread_counts
from worker.engine import threads as engine_threads


def test_prints_the_ratios_and_the_blas_in_use(capsys):
    bench_mlp.main(["--quick", "--repeats", "1", "--threads", "1"])
    out = capsys.readouterr().out
    assert "NumPy's BLAS: " in out and "-- 1 thread each" in out
    for label in ("engine / floor", "engine / pytorch"):
        assert re.search(rf"^{re.escape(label)}\s+\d+\.\d+x", out, re.MULTILINE), (label, out)
    assert re.search(r"^scikit-learn\s+\d+\.\d+ s/epoch", out, re.MULTILINE), out


def test_without_a_count_each_case_runs_on_one_thread_every_core_and_the_defaults(monkeypatch, capsys):
    monkeypatch.setattr(thread_counts, "available_cores", lambda: 4)
    assert thread_counts.counts(None) == [1, 4, thread_counts.DEFAULTS]
    assert thread_counts.counts(3) == [3]
    monkeypatch.setattr(thread_counts, "available_cores", lambda: 1)
    assert thread_counts.counts(None) == [1, thread_counts.DEFAULTS]
    seen, one, two = [], bench_mlp.Best(1.0, 1.0), bench_mlp.Best(2.0, 2.0)
    monkeypatch.setattr(bench_mlp, "interleaved", lambda X, y, threads, *_: seen.append(threads) or (one, one, two))
    bench_mlp.main(["--quick", "--no-sklearn"])
    out = capsys.readouterr().out
    assert seen == [1, thread_counts.DEFAULTS]
    assert "-- defaults (ours " in out and "engine / pytorch       0.50x" in out


def test_a_sweep_doubles_the_threads_up_to_every_core_then_the_defaults(monkeypatch):
    monkeypatch.setattr(thread_counts, "available_cores", lambda: 16)
    assert thread_counts.counts(None, sweep=True) == [1, 2, 4, 8, 16, thread_counts.DEFAULTS]
    monkeypatch.setattr(thread_counts, "available_cores", lambda: 6)
    assert thread_counts.counts(None, sweep=True) == [1, 2, 4, 6, thread_counts.DEFAULTS]
    assert thread_counts.counts(3, sweep=True) == [3]


def test_a_sweep_with_a_thread_count_is_refused(monkeypatch, capsys):
    monkeypatch.setattr(bench_mlp, "make_data", lambda rows: pytest.fail("ran"))
    with pytest.raises(SystemExit) as exited:
        bench_mlp.main(["--sweep", "--threads", "2"])
    assert exited.value.code == 2
    assert "--sweep and --threads exclude each other" in capsys.readouterr().err


def test_the_batch_size_reaches_every_side(monkeypatch, capsys):
    batches = []
    one = bench_mlp.Best(1.0, 1.0)
    monkeypatch.setattr(bench_mlp, "interleaved", lambda X, y, threads, repeats, batch: batches.append(batch) or (one,) * 3)
    bench_mlp.main(["--quick", "--no-sklearn", "--threads", "1", "--batch", "1024"])
    assert batches == [1024] and "batch 1024," in capsys.readouterr().out
    X, y = bench_mlp.make_data(3000)
    tenths = bench_mlp.Tenths(3000, 1024)
    bench_mlp.engine(X, y, 1, tenths, batch=1024)
    assert len(tenths.marks) == 4  # 3 batches of 1024: the start, after batches 1 and 2, the end


def test_each_tenth_of_an_epoch_counts_its_best_run():
    """Two epochs, each with a different tenth spoiled by other work: the figure is the sum of
    the clean tenths; the best whole epoch is printed beside it."""
    runs = []
    for spoiled in (2, 7):
        run = bench_mlp.Tenths(bench_mlp.BATCH * 20)
        assert sorted(run.ends) == list(range(2, 20, 2))
        run.marks = [0.0]
        for tenth in range(bench_mlp.TENTHS):
            run.marks.append(run.marks[-1] + (1.0 if tenth == spoiled else 0.1))
        runs.append(run)
    figure = bench_mlp.best(runs)
    assert figure.tenths == pytest.approx(1.0) and figure.epoch == pytest.approx(1.9)


def test_defaults_are_the_engine_policy_and_pytorchs_own(monkeypatch):
    monkeypatch.delenv("BPS_BLAS_THREADS", raising=False)
    monkeypatch.setattr(engine_threads, "job_threads", lambda: 7)
    assert thread_counts.ours(thread_counts.DEFAULTS) == 7 and thread_counts.ours(2) == 2
    monkeypatch.setenv("BPS_BLAS_THREADS", "3")
    assert thread_counts.ours(thread_counts.DEFAULTS) == 3

    default = thread_counts.use_torch_threads(thread_counts.DEFAULTS)
    assert thread_counts.use_torch_threads(1) == 1
    assert thread_counts.use_torch_threads(thread_counts.DEFAULTS) == default
