"""Which OpenBLAS kernels run the engine's matrix products faster on this CPU (bps.openblas).

OpenBLAS reads OPENBLAS_CORETYPE once, when it loads, so each candidate runs in its own Python
process; the candidates take turns (A B A B ...) and each product's figure is its best. Prints
µs per product for the dense layers of the MLP benchmark, in the layouts the engine uses, one
large square product and a whole engine epoch of that benchmark (on 20,000 rows), with the
ratio of each candidate to the first.

    .venv/bin/python -m bench blas [--threads 1] [--repeats 2]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

CANDIDATES = ("SkylakeX", "Haswell")  # OpenBLAS's pick on AMD Zen 4, and bps.openblas's
# The dense layer's products in the engine's layouts (weights stored (out, in), as PyTorch):
# forward x @ W.T, weight gradient dz.T @ x, input gradient dz @ W; (name, batch, in, out, dtype)
LAYERS = [("784->256", 128, 784, 256, "float32"), ("256->128", 128, 256, 128, "float32"),
          ("784->256", 128, 784, 256, "float64")]

CHILD = """
import json, sys, time
import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits
layers, threads = json.loads(sys.argv[1]), int(sys.argv[2])
rng, out = np.random.default_rng(0), {}

def best_of(fn, flops):
    loops = max(3, int(1e9 / flops))  # about 0.05 s of work at 20 GFLOPS
    fn()
    start = time.perf_counter()
    for _ in range(loops):
        fn()
    return (time.perf_counter() - start) / loops

with threadpool_limits(limits=threads, user_api="blas"):
    for name, batch, fan_in, units, dtype in layers:
        x, w = rng.standard_normal((batch, fan_in)).astype(dtype), rng.standard_normal((units, fan_in)).astype(dtype)
        dz, z = rng.standard_normal((batch, units)).astype(dtype), np.empty((batch, units), dtype)
        gw, dx, flops = np.empty_like(w), np.empty_like(x), 2 * batch * fan_in * units
        out[f"{name} {dtype} x @ W.T"] = best_of(lambda: np.matmul(x, w.T, out=z), flops)
        out[f"{name} {dtype} dz.T @ x"] = best_of(lambda: np.matmul(dz.T, x, out=gw), flops)
        out[f"{name} {dtype} dz @ W"] = best_of(lambda: np.matmul(dz, w, out=dx), flops)
    a = rng.standard_normal((2048, 2048)).astype("float32")
    c = np.empty_like(a)
    out["2048^3 float32 a @ a"] = best_of(lambda: np.matmul(a, a, out=c), 2 * 2048**3)
from bench.bench_mlp import engine, make_data
X, y = make_data(20_000)
engine(X[:512], y[:512], threads)  # compiles or loads the fused kernels
out["MLP epoch, 20,000 rows"] = min(engine(X, y, threads) for _ in range(2))
info = next((i for i in threadpool_info() if i["user_api"] == "blas"), {})
print(json.dumps({"architecture": info.get("architecture"), "seconds": out}))
"""


def run_candidate(coretype: str, threads: int) -> dict:
    env = {**os.environ, "OPENBLAS_CORETYPE": coretype}
    done = subprocess.run([sys.executable, "-c", CHILD, json.dumps(LAYERS), str(threads)], env=env,
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench blas")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2)
    args, _ = parser.parse_known_args(argv)
    best: dict[str, dict[str, float]] = {c: {} for c in CANDIDATES}
    loaded: dict[str, str | None] = {}
    for _ in range(args.repeats):
        for coretype in CANDIDATES:
            result = run_candidate(coretype, args.threads)
            loaded[coretype] = result["architecture"]
            for name, seconds in result["seconds"].items():
                best[coretype][name] = min(seconds, best[coretype].get(name, seconds))
    first = CANDIDATES[0]
    print(f"OpenBLAS kernels, {args.threads} thread(s), best of {args.repeats}: µs per product "
          f"(loaded: {', '.join(f'{c} -> {a}' for c, a in loaded.items())})")
    for name in best[first]:
        cells = "  ".join(f"{c} {best[c][name] * 1e6:10.1f}" for c in CANDIDATES)
        ratios = "  ".join(f"{first}/{c} {best[first][name] / best[c][name]:5.2f}x" for c in CANDIDATES[1:])
        print(f"{name:30s} {cells}   {ratios}")
    print(f"bps picks for this CPU: {os.environ.get('OPENBLAS_CORETYPE') or 'OpenBLAS default'}")
