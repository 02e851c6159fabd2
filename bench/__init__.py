"""Benchmarks (`make bench` = `python -m bench [NAME_FILTER] [--quick]`): not tests.

Every module bench/bench_*.py exposes `main(argv)`; speed claims are ratios against an anchor
measured in the same run."""

from bps.openblas import choose_kernels, park_idle_threads

# Before any benchmark module loads NumPy: the OpenBLAS kernels a `bps worker` on this CPU uses,
# so that every NumPy figure, the floors included, is taken with them (bps.openblas).
choose_kernels()
park_idle_threads()
