"""Benchmarks (`make bench` = `python -m bench [NAME_FILTER] [--quick]`): not tests.

Every module bench/bench_*.py exposes `main(argv)`; speed claims are ratios against an anchor
measured in the same run."""
