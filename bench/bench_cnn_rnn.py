"""One training epoch of a small CNN and of rnn/lstm/gru models, ours vs PyTorch CPU, same run.

    python -m bench.bench_cnn_rnn [--samples 10000] [--only cnn,rnn,lstm,gru] [--repeats 1] [--threads N]

Batch 64, SGD with momentum 0.9, float32, 10,000 synthetic samples, shuffled each epoch.
CNN: 1x28x28 -> conv 8 5x5 relu -> maxpool 2 -> conv 16 5x5 relu -> maxpool 2 -> flatten
-> dense 10. Sequences: 50 steps x 16 features -> rnn/lstm/gru 128 units (last step) -> dense 10.
Ours runs Network.fit (with --manual: the same layers in a plain loop (forward, softmax cross-entropy, backward, momentum update)). Prints each epoch time and
the ratio ours / PyTorch (lower is better; target <= 1.0), and for rnn/lstm/gru the GEMM floor
of our epoch (bench/recurrent_floor.py: our products alone; pytorch/floor below 1 means the
BLAS in use cannot reach PyTorch's time). Best of `repeats`, ours and
PyTorch in turn. Without --threads each case runs on one thread each, on every core each, then
each side at its defaults (bench/thread_counts.py); --threads N runs that count only.
"""
from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import numpy as np

from bench import recurrent_floor, thread_counts

BATCH, LR, MOMENTUM, CLASSES = 64, 0.01, 0.9, 10
CNN_SHAPE, SEQ_SHAPE, UNITS = (1, 28, 28), (50, 16), 128


def cnn_layers() -> list[dict[str, Any]]:
    return [{"type": "conv2d", "filters": 8, "kernel_size": 5, "activation": "relu"},
            {"type": "maxpool2d", "pool_size": 2},
            {"type": "conv2d", "filters": 16, "kernel_size": 5, "activation": "relu"},
            {"type": "maxpool2d", "pool_size": 2},
            {"type": "flatten"},
            {"type": "dense", "units": CLASSES, "activation": "softmax"}]


def seq_layers(kind: str) -> list[dict[str, Any]]:
    return [{"type": kind, "units": UNITS},
            {"type": "dense", "units": CLASSES, "activation": "softmax"}]


def torch_model(model: str):
    import torch  # noqa: PLC0415

    nn = torch.nn
    if model == "cnn":
        return nn.Sequential(nn.Conv2d(1, 8, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 16, 5),
                             nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(256, CLASSES))
    recurrent = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}[model](16, UNITS, batch_first=True)

    class LastStep(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rec, self.out = recurrent, nn.Linear(UNITS, CLASSES)

        def forward(self, x):
            return self.out(self.rec(x)[0][:, -1])

    return LastStep()


def torch_epoch(model: str, x: np.ndarray, y: np.ndarray, threads: int | None) -> float:
    import torch  # noqa: PLC0415

    thread_counts.use_torch_threads(threads)
    torch.manual_seed(0)
    net = torch_model(model)
    opt = torch.optim.SGD(net.parameters(), lr=LR, momentum=MOMENTUM)
    loss_fn = torch.nn.CrossEntropyLoss()
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    start = time.perf_counter()
    order = torch.randperm(len(xt))
    for begin in range(0, len(xt), BATCH):
        idx = order[begin:begin + BATCH]
        opt.zero_grad()
        loss_fn(net(xt[idx]), yt[idx]).backward()
        opt.step()
    return time.perf_counter() - start


def ours_epoch(model: str, x: np.ndarray, y: np.ndarray, manual: bool, threads: int | None) -> float:
    layers = cnn_layers() if model == "cnn" else seq_layers(model)
    threads = thread_counts.ours(threads)
    if manual:
        from threadpoolctl import threadpool_limits  # noqa: PLC0415

        with threadpool_limits(limits=threads, user_api="blas"):
            return manual_epoch(layers, x, y)
    from worker.engine.network import Network  # noqa: PLC0415
    spec = {"layers": layers, "loss": "cross_entropy", "epochs": 1, "batch_size": BATCH,
            "optimizer": {"type": "sgd", "learning_rate": LR, "momentum": MOMENTUM},
            "shuffle": True, "validation_split": 0.0, "dtype": "float32", "device": "cpu"}
    net = Network.from_spec(spec, input_shape=x.shape[1:], seed=0, dtype="float32", device="cpu")
    net.n_threads = threads
    start = time.perf_counter()
    net.fit(x, y)
    return time.perf_counter() - start


def manual_epoch(layers: list[dict[str, Any]], x: np.ndarray, y: np.ndarray) -> float:
    """The layers in a plain loop: the fallback while the Network class is not there."""
    from worker.engine.layers import BuildContext, layer_class  # noqa: PLC0415

    ctx = BuildContext(np, np.float32, np.random.default_rng(0), np.random.default_rng(1))
    shape, net = tuple(x.shape[1:]), []
    for i, config in enumerate(layers):
        config = {**config, "activation": "linear"} if config["type"] == "dense" else config
        net.append(layer_class(config["type"])(config, i))
        shape = net[-1].build(shape, ctx)
    velocity = {k: np.zeros_like(v) for layer in net for k, v in layer.params.items()}
    start = time.perf_counter()
    order = np.random.default_rng(0).permutation(len(x))
    for begin in range(0, len(x), BATCH):
        idx = order[begin:begin + BATCH]
        out = x[idx]
        for layer in net:
            out = layer.forward(out, True)
        grad = np.exp(out - out.max(axis=1, keepdims=True))
        grad /= grad.sum(axis=1, keepdims=True)
        grad[np.arange(len(idx)), y[idx]] -= 1.0
        grad /= len(idx)
        for k, layer in reversed(list(enumerate(net))):
            grad = layer.backward(grad, need_input_grad=k > 0)
        for layer in net:
            for name, param in layer.params.items():
                velocity[name] *= MOMENTUM
                velocity[name] += layer.grads[name]
                param -= LR * velocity[name]
    return time.perf_counter() - start


def synthetic(model: str, samples: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    shape = CNN_SHAPE if model == "cnn" else SEQ_SHAPE
    x = rng.standard_normal((samples, *shape)).astype(np.float32)
    return x, rng.integers(0, CLASSES, samples).astype(np.int64)


def fused_loops_line(threads: int) -> str:
    """Whether our LSTM's fused time loops run in this bench's training on `threads` threads: what
    LSTM.fused_loop, which the layer's forward asks, answers for a batch under the engine's thread
    budget (off without NumPy's OpenBLAS or where the step kernel goes parallel)."""
    from worker.engine import cpu_blas  # noqa: PLC0415
    from worker.engine.layers import BuildContext, layer_class  # noqa: PLC0415
    from worker.engine.threads import thread_budget  # noqa: PLC0415

    config = seq_layers("lstm")[0]
    lstm = layer_class("lstm")(config, 0)
    lstm.build(SEQ_SHAPE, BuildContext(np, np.float32, np.random.default_rng(0), None))
    with thread_budget(threads, kernels=True):
        parts, gemm = lstm.fused_loop(BATCH)
    blas = "" if cpu_blas.gemm(np.float32) else "; NumPy's OpenBLAS (libscipy_openblas64_) not found"
    state = "on" if gemm else "off"
    return f"lstm: fused time loops {state} (cpu_recurrent.fused_gemm, parts of {BATCH // parts} rows{blas})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=10_000)
    parser.add_argument("--only", default="cnn,rnn,lstm,gru")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="only this count (default: 1, all, defaults)")
    parser.add_argument("--manual", action="store_true",
                        help="time our layers in a plain loop instead of Network.fit")
    args, _ = parser.parse_known_args(argv)  # bench/__main__ passes its name filters too
    loop = "plain loop over our layers" if args.manual else "Network.fit"
    print(f"one epoch, {args.samples} samples, batch {BATCH}, SGD momentum, float32 "
          f"(best of {args.repeats}, ours and PyTorch in turn; ours: {loop})")
    data = {model: synthetic(model, args.samples) for model in args.only.split(",")}
    for model, (x, y) in data.items():  # compiles or loads the CPU kernels before anything is timed
        ours_epoch(model, x[:BATCH * 2], y[:BATCH * 2], args.manual, 1)
    for threads in thread_counts.counts(args.threads):
        print(f"-- {thread_counts.label(threads)}", flush=True)
        if "lstm" in data:
            print(fused_loops_line(thread_counts.ours(threads)))
        for model, (x, y) in data.items():
            times: dict[str, list[float]] = {"ours": [], "torch": [], "floor": []}
            for _ in range(args.repeats):
                times["ours"].append(ours_epoch(model, x, y, args.manual, threads))
                times["torch"].append(torch_epoch(model, x, y, threads))
                if model in recurrent_floor.MODELS:
                    times["floor"].append(recurrent_floor.floor_epoch(model, len(x), BATCH, SEQ_SHAPE, UNITS,
                                                                      thread_counts.ours(threads)))
            ours, torch_s = min(times["ours"]), min(times["torch"])
            print(f"{model:5s} ours {ours:7.2f} s   pytorch {torch_s:7.2f} s   "
                  f"ratio ours/pytorch {ours / torch_s:5.2f}", flush=True)
            if times["floor"]:
                floor = min(times["floor"])
                print(f"      gemm floor {floor:5.2f} s (ours' products only)   ours/floor {ours / floor:5.2f}   "
                      f"pytorch/floor {torch_s / floor:5.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
