"""Whether the engine's thread settings pay, each measured in fresh processes (they must be set
before OpenBLAS and Numba load), in turn, best of --repeats, on every core:

- OpenBLAS's idle threads spinning 2**20 cycles, then sleeping (OPENBLAS_THREAD_TIMEOUT=20, what
  `bps` and `bench` set), against parking at once (4) and its compiled default (28: they spin
  about 2**28 cycles, a tenth of a second, after each product);
- serial kernels only (the engine's choice below kernel_jit.PARALLEL_MIN_THREADS) against the
  parallel variants above kernel_jit.PARALLEL_MIN elements, forced on;
- for those parallel variants, Numba's workqueue threading layer (the engine's) against OpenMP.

Each process prints one MLP epoch through Network.fit (bench_mlp's workload on 20,000 rows),
the GEMM floor of the same rows and a CNN epoch (bench_cnn_rnn's, 2,000 samples); the ratios
are against the first setting. `--threads N` runs on N threads instead of every core.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

ENGINE = {"OPENBLAS_THREAD_TIMEOUT": "20", "NUMBA_THREADING_LAYER": "workqueue"}
PARALLEL = "BENCH_PARALLEL_KERNELS"  # read by the child process only
SETTINGS = {
    "engine (2**20, serial)": ENGINE,
    "OpenBLAS parks at once": {**ENGINE, "OPENBLAS_THREAD_TIMEOUT": "4"},
    "OpenBLAS spins 2**28 cycles": {**ENGINE, "OPENBLAS_THREAD_TIMEOUT": "28"},
    "parallel kernels forced on": {**ENGINE, PARALLEL: "1"},
    "parallel kernels on OpenMP": {**ENGINE, PARALLEL: "1", "NUMBA_THREADING_LAYER": "omp"},
}


def child(threads: int) -> None:
    """One measurement in this process: prints "mlp S floor S cnn S"."""
    from threadpoolctl import threadpool_limits  # noqa: PLC0415

    from bench import bench_cnn_rnn, bench_mlp  # noqa: PLC0415
    from worker.engine import kernel_jit  # noqa: PLC0415

    if os.environ.get(PARALLEL):
        kernel_jit.PARALLEL_MIN_THREADS = 2
    X, y = bench_mlp.make_data(20_000)
    bench_mlp.engine(X[:1024], y[:1024], threads)  # compiles or loads the kernels
    mlp = bench_mlp.engine(X, y, threads)
    with threadpool_limits(limits=threads, user_api="blas"):
        floor = bench_mlp.gemm_floor(X)
    x, labels = bench_cnn_rnn.synthetic("cnn", 2_000)
    bench_cnn_rnn.ours_epoch("cnn", x[:256], labels[:256], False, threads)
    start = time.perf_counter()
    cnn = bench_cnn_rnn.ours_epoch("cnn", x, labels, False, threads)
    print(f"mlp {mlp:.4f} floor {floor:.4f} cnn {cnn:.4f} ({time.perf_counter() - start:.1f} s)")


def measure(env: dict[str, str], threads: int) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-m", "bench.bench_threads", "--child", "--threads", str(threads)],
                         env={**os.environ, **env}, capture_output=True, text=True, check=True).stdout
    fields = out.split()
    return {fields[i]: float(fields[i + 1]) for i in (0, 2, 4)}


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench threads")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args, _ = parser.parse_known_args(argv)
    from worker.engine.threads import available_cores  # noqa: PLC0415

    threads = args.threads or available_cores()
    if args.child:
        child(threads)
        return
    print(f"thread settings, {threads} threads, fresh process each, in turn, best of {args.repeats} (seconds)")
    best: dict[str, dict[str, float]] = {}
    for _ in range(args.repeats):
        for name, env in SETTINGS.items():
            for key, value in measure(env, threads).items():
                best.setdefault(name, {})[key] = min(value, best.get(name, {}).get(key, float("inf")))
    anchor = best[next(iter(SETTINGS))]
    for name, figures in best.items():
        ratios = "  ".join(f"{k} {v:6.3f} s ({v / anchor[k]:4.2f}x)" for k, v in figures.items())
        print(f"{name:28s} {ratios}")


if __name__ == "__main__":
    main(sys.argv[1:])
