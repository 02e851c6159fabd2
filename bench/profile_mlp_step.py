"""Where an MLP training step spends its time beyond the matrix products: per-phase µs per
step of the engine's own fit loop on the bench_mlp workload, beside the GEMM floor per step.

    .venv/bin/python -m bench.profile_mlp_step [--rows 20000] [--threads 1] [--batch 128] [--kernels auto]
        [--parallel-min N]

Not run by `make bench` (it reaches into the loop's internals, worker.engine.training._Loop,
to time each phase); it tells where to look when engine / floor is above its target. The
optimizer step and the gradient norms are one fused pass (cpu_optimizer_steps), timed together. The
threads are a fit's budget (threads.thread_budget: OpenBLAS and the fused kernels); `--kernels
serial` or `parallel` forces the kernels' variant whatever the count (kernel_jit.variant;
`parallel` also gives the dense passes the general size threshold, as before DENSE_PARALLEL_MIN);
`--parallel-min` sets the size from which a pass takes its parallel variant (kernel_jit.PARALLEL_MIN)."""
from __future__ import annotations

import argparse
import time

import numpy as np

from bench.bench_mlp import BATCH, SIZES, SPEC, gemm_floor, make_data

KERNELS = ("auto", "serial", "parallel")


def profile(rows: int, batch: int = BATCH) -> tuple[dict[str, float], float]:
    """(µs per step by phase, floor µs per step)."""
    from worker.engine import Network, training  # noqa: PLC0415

    X, y = make_data(rows)
    net = Network.from_spec({**SPEC, "batch_size": batch}, input_shape=(SIZES[0],), n_outputs=SIZES[-1])
    net.ensure_built(X, y)
    net.train_state = training.new_train_state(net)
    loop = training._Loop(net, net.inputs(X), net.targets(y), X[:0], y[:0])
    order, totals, steps = loop._order(1), {}, 0

    def timed(phase: str, fn, *args):  # noqa: ANN001, ANN202
        start = time.perf_counter()
        result = fn(*args)
        totals[phase] = totals.get(phase, 0.0) + time.perf_counter() - start
        return result

    squares = np.empty(len(loop.names))
    loop._step(*loop._batch(order, 0, batch), 0.01, loop.new_sums())  # compiles or loads the kernels
    for start in range(0, rows, batch):
        xb, yb = timed("gather", loop._batch, order, start, min(start + batch, rows))
        out = timed("forward", net.forward, xb, True)
        _, grad, _ = timed("loss + accuracy", net.loss.value_grad_correct, out, yb)
        timed("backward", net.backward, grad)
        timed("step + grad norms", loop.st.optimizer.fused_step, net.flat_grads, 0.01, net.flat_bounds, squares)
        steps += 1
    start = time.perf_counter()
    gemm_floor(X, batch=batch)
    return {k: v / steps * 1e6 for k, v in totals.items()}, (time.perf_counter() - start) / steps * 1e6


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.profile_mlp_step")
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=BATCH)
    parser.add_argument("--kernels", choices=KERNELS, default="auto")
    parser.add_argument("--parallel-min", type=int, default=None, help="elements (kernel_jit.PARALLEL_MIN)")
    args = parser.parse_args(argv)
    from bench.thread_counts import forced_variants, kernel_variants  # noqa: PLC0415
    from worker.engine import kernel_jit  # noqa: PLC0415
    from worker.engine.threads import thread_budget  # noqa: PLC0415

    with kernel_variants(**forced_variants(args.kernels, parallel_min=args.parallel_min)):
        with thread_budget(args.threads, kernels=True):
            phases, floor = profile(args.rows, args.batch)
        parallel_min = kernel_jit.PARALLEL_MIN
    print(f"MLP 784-256-128-10, batch {args.batch}, {args.threads} thread(s), kernels {args.kernels} "
          f"(parallel from {parallel_min} elements), {args.rows} rows: µs per step")
    for phase, micros in phases.items():
        print(f"{phase:16s} {micros:8.1f}")
    print(f"{'all phases':16s} {sum(phases.values()):8.1f}   GEMM floor {floor:8.1f}")


if __name__ == "__main__":
    main()
