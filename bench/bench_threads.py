"""Whether the engine's thread settings pay, each measured in fresh processes (they must be set
before OpenBLAS and Numba load), in turn, best of --repeats, on every core:

- OpenBLAS's idle threads spinning 2**20 cycles, then sleeping (OPENBLAS_THREAD_TIMEOUT=20, what
  `bps` and `bench` set), against parking at once (4) and its compiled default (28: they spin
  about 2**28 cycles, a tenth of a second, after each product);
- the kernels' variants as the engine picks them (serial below kernel_jit.PARALLEL_MIN_THREADS,
  parallel from there for calls above kernel_jit.PARALLEL_MIN elements, DENSE_PARALLEL_MIN for
  the dense layer's passes; conv, pooling and the recurrent layers split the batch across
  threads below it, batch_split) against serial ones forced, with the batch split at any count
  and with no split, and parallel ones forced on (the dense passes too);
- for those parallel variants, Numba's workqueue threading layer (the engine's) against OpenMP.

Each process prints one MLP epoch through Network.fit (bench_mlp's workload on 20,000 rows,
batch --batch), the GEMM floor of the same rows, a CNN epoch (bench_cnn_rnn's, 2,000
samples) and an LSTM epoch (1,000 samples); the ratios are against the first setting.
`--threads N` runs on N threads instead of every core.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys

from bench.bench_mlp import BATCH

ENGINE = {"OPENBLAS_THREAD_TIMEOUT": "20", "NUMBA_THREADING_LAYER": "workqueue"}
KERNELS = "BENCH_KERNELS"  # read by the child process only: "serial" or "parallel" (child)
PART_ROWS = "BENCH_PART_ROWS"  # likewise: batch_split.MIN_PART_ROWS (a huge value: never split)
SETTINGS = {
    "engine (2**20, own choice)": ENGINE,
    "OpenBLAS parks at once": {**ENGINE, "OPENBLAS_THREAD_TIMEOUT": "4"},
    "OpenBLAS spins 2**28 cycles": {**ENGINE, "OPENBLAS_THREAD_TIMEOUT": "28"},
    "serial kernels, batch split": {**ENGINE, KERNELS: "serial"},
    "serial kernels, no split": {**ENGINE, KERNELS: "serial", PART_ROWS: str(10**9)},
    "parallel kernels forced on": {**ENGINE, KERNELS: "parallel"},
    "parallel kernels on OpenMP": {**ENGINE, KERNELS: "parallel", "NUMBA_THREADING_LAYER": "omp"},
}


def child(threads: int, batch: int) -> None:
    """One measurement in this process: prints "mlp S floor S cnn S lstm S"; BENCH_KERNELS
    "parallel" forces the parallel variants from 2 threads, "serial" the serial ones."""
    from bench import thread_counts  # noqa: PLC0415

    forced = thread_counts.forced_variants(os.environ.get(KERNELS) or None, min_threads=2)
    with thread_counts.kernel_variants(**forced):
        _measure_here(threads, batch)


def _measure_here(threads: int, batch: int) -> None:
    from threadpoolctl import threadpool_limits  # noqa: PLC0415

    from bench import bench_cnn_rnn, bench_mlp  # noqa: PLC0415
    from worker.engine import batch_split  # noqa: PLC0415

    if os.environ.get(PART_ROWS):
        batch_split.MIN_PART_ROWS = int(os.environ[PART_ROWS])
    X, y = bench_mlp.make_data(20_000)
    bench_mlp.engine(X[:4 * batch], y[:4 * batch], threads, batch=batch)  # compiles or loads the kernels
    mlp = bench_mlp.engine(X, y, threads, batch=batch)
    with threadpool_limits(limits=threads, user_api="blas"):
        floor = bench_mlp.gemm_floor(X, batch=batch)
    epochs = {}
    for model, samples in (("cnn", 2_000), ("lstm", 1_000)):
        x, labels = bench_cnn_rnn.synthetic(model, samples)
        bench_cnn_rnn.ours_epoch(model, x[:256], labels[:256], False, threads)
        epochs[model] = bench_cnn_rnn.ours_epoch(model, x, labels, False, threads)
    print(f"mlp {mlp:.4f} floor {floor:.4f} cnn {epochs['cnn']:.4f} lstm {epochs['lstm']:.4f}")


def measure(env: dict[str, str], threads: int, batch: int) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-m", "bench.bench_threads", "--child", "--threads", str(threads),
                          "--batch", str(batch)],
                         env={**os.environ, **env}, capture_output=True, text=True, check=True).stdout
    fields = out.split()
    return {fields[i]: float(fields[i + 1]) for i in range(0, len(fields), 2)}


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench threads")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--batch", type=int, default=BATCH, help="the MLP's batch size")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args, _ = parser.parse_known_args(argv)
    from worker.engine.threads import available_cores  # noqa: PLC0415

    threads = args.threads or available_cores()
    if args.child:
        child(threads, args.batch)
        return
    print(f"thread settings, {threads} threads, MLP batch {args.batch}, fresh process each, in turn, "
          f"best of {args.repeats} (seconds)")
    best: dict[str, dict[str, float]] = {}
    for _ in range(args.repeats):
        for name, env in SETTINGS.items():
            for key, value in measure(env, threads, args.batch).items():
                best.setdefault(name, {})[key] = min(value, best.get(name, {}).get(key, float("inf")))
    anchor = best[next(iter(SETTINGS))]
    for name, figures in best.items():
        ratios = "  ".join(f"{k} {v:6.3f} s ({v / anchor[k]:4.2f}x)" for k, v in figures.items())
        print(f"{name:28s} {ratios}")


if __name__ == "__main__":
    main(sys.argv[1:])
