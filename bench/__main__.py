"""Runs every bench/bench_*.py module's main(argv); a non-option argument filters by name.
(Importing `bench` first makes the OpenBLAS kernel choice a `bps worker` makes: bench/__init__.)"""
from __future__ import annotations

import importlib
import pkgutil
import sys

import bench


def main(argv: list[str]) -> int:
    filters = [a for a in argv if not a.startswith("-")]
    names = sorted(m.name for m in pkgutil.iter_modules(bench.__path__) if m.name.startswith("bench_"))
    selected = [n for n in names if not filters or any(f in n for f in filters)]
    if not selected:
        print(f"no benchmark matches {filters}; available: {names}")
        return 1
    from bench.bench_mlp import blas_kernels  # noqa: PLC0415  (loads NumPy: after bench chose its kernels)

    print(f"NumPy's BLAS: {blas_kernels()}", flush=True)
    for name in selected:
        print(f"== {name}", flush=True)
        importlib.import_module(f"bench.{name}").main(argv)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
