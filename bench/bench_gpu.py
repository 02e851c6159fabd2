"""Issue 10's GPU cases: seconds per epoch of our Network.fit(device="gpu") against PyTorch CUDA
eager in the same run, and against our own CPU engine on the same host.

    python -m bench gpu [--epochs 4] [--only mlp128,mlp1024,cnn,lstm,gru] [--no-cpu]

Cases (float32, SGD momentum 0.9, reshuffled each epoch, synthetic data, 10 classes):
mlp128 / mlp1024: 784-256-128-10 ReLU MLP (bench_mlp's), 60,000 rows, batch 128 / 1024;
cnn: bench_cnn_rnn's CNN on 1x28x28, 10,000 rows, batch 64; lstm (and gru): 128 units over
50 steps x 16 features, last step, dense 10, 10,000 rows, batch 64 (PyTorch: cuDNN).
Each side runs --epochs epochs; the first is a warm-up (compilation, cuBLAS/cuDNN plans) and
the median of the others is printed. Ours times an epoch by the fit loop's own `duration_s`,
which ends with the epoch's one host read of the loss (so all its GPU work is done); PyTorch's
epoch ends with torch.cuda.synchronize(). Without a CUDA GPU and CuPy it says so and exits 0.
Ratios: ours / PyTorch and ours GPU / ours CPU (lower is better for ours).
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import numpy as np

from bench import bench_cnn_rnn, bench_mlp
from worker.engine.backend import gpu_available

CASES = {  # name: (rows, batch)
    "mlp128": (60_000, 128), "mlp1024": (60_000, 1024), "cnn": (10_000, 64), "lstm": (10_000, 64), "gru": (10_000, 64),
}


def case_data(name: str, rows: int) -> tuple[np.ndarray, np.ndarray, list[dict[str, Any]]]:
    rng = np.random.default_rng(0)
    if name.startswith("mlp"):
        x = rng.standard_normal((rows, bench_mlp.SIZES[0])).astype(np.float32)
        return x, rng.integers(0, 10, rows).astype(np.int64), bench_mlp.SPEC["layers"]
    model = name
    x, y = bench_cnn_rnn.synthetic(model, rows)
    return x, y, bench_cnn_rnn.cnn_layers() if model == "cnn" else bench_cnn_rnn.seq_layers(model)


def ours(layers: list[dict[str, Any]], x: np.ndarray, y: np.ndarray, batch: int, epochs: int, device: str) -> float:
    from worker.engine.network import Network  # noqa: PLC0415

    spec = {"layers": layers, "loss": "cross_entropy", "epochs": epochs, "batch_size": batch,
            "optimizer": {"type": "sgd", "learning_rate": 0.01, "momentum": 0.9}, "shuffle": True,
            "validation_split": 0.0, "dtype": "float32", "device": device, "seed": 0}
    net = Network.from_spec(spec, input_shape=x.shape[1:], seed=0, dtype="float32", device=device)
    history = net.fit(x, y)
    return statistics.median(r["duration_s"] for r in history.epochs[1:])


def torch_cuda(name: str, x: np.ndarray, y: np.ndarray, batch: int, epochs: int) -> float | None:
    try:
        import torch  # noqa: PLC0415
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    torch.manual_seed(0)
    device = torch.device("cuda")
    if name.startswith("mlp"):
        sizes, nn = bench_mlp.SIZES, torch.nn
        net = nn.Sequential(nn.Linear(sizes[0], sizes[1]), nn.ReLU(), nn.Linear(sizes[1], sizes[2]), nn.ReLU(),
                            nn.Linear(sizes[2], sizes[3]))
    else:
        net = bench_cnn_rnn.torch_model(name)
    net = net.to(device)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    loss_fn = torch.nn.CrossEntropyLoss()
    xt, yt = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)
    times = []
    for _ in range(epochs):
        torch.cuda.synchronize()
        start = time.perf_counter()
        order = torch.randperm(len(xt), device=device)
        for begin in range(0, len(xt), batch):
            idx = order[begin:begin + batch]
            opt.zero_grad(set_to_none=True)
            loss_fn(net(xt[idx]), yt[idx]).backward()
            opt.step()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def run_case(name: str, epochs: int, with_cpu: bool) -> str:
    rows, batch = CASES[name]
    x, y, layers = case_data(name, rows)
    gpu_s = ours(layers, x, y, batch, epochs, "gpu")
    torch_s = torch_cuda(name, x, y, batch, epochs)
    cpu_s = ours(layers, x, y, batch, 2, "cpu") if with_cpu else None
    line = f"{name:8s} {rows:6d} rows batch {batch:5d}  ours gpu {gpu_s:7.3f} s"
    line += f"  pytorch cuda {torch_s:7.3f} s  ours/pytorch {gpu_s / torch_s:5.2f}" if torch_s else "  pytorch cuda n/a"
    line += f"  ours cpu {cpu_s:7.3f} s  gpu/cpu {gpu_s / cpu_s:5.2f}" if cpu_s else ""
    return line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=4, help="per side; the first is a warm-up")
    parser.add_argument("--only", default="mlp128,mlp1024,cnn,lstm")
    parser.add_argument("--no-cpu", action="store_true", help="skip our CPU engine (slow for cnn/lstm)")
    args, _ = parser.parse_known_args(argv)  # bench/__main__ passes its name filters too
    if not gpu_available():
        print("bench gpu: no CUDA GPU with CuPy in this process: skipped (nothing measured)")
        return 0
    print(f"seconds per epoch, median of {args.epochs - 1} after a warm-up epoch, float32, SGD momentum 0.9")
    for name in args.only.split(","):
        print(run_case(name, max(args.epochs, 2), not args.no_cpu), flush=True)
    return 0
