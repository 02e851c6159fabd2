"""Issue 14's workload: an asynchronous prediction of 1,000,000 rows with the MLP of
bench_mlp (784-256-128-10, float32), the rows stored as an .npz dataset, run by a real
`bps worker` behind a real `bps api` (POST {"dataset_id", "async": true}, then polls until
succeeded), against the engine's own `Network.predict` on the same rows in this process
(timed before and after, averaged: the machine's load drifts). Then the CSV download of every
row: its size, rate, and the API process's resident memory before and at its peak (sampled
every 20 ms) while it streams.

`python -m bench predictions [--rows N] [--chunk-rows N]`. SQLite and the file broker in a
temp dir; the dataset goes into the database directly (it is far over MAX_UPLOAD_BYTES).
"""
from __future__ import annotations

import argparse
import hashlib
import http.client
import io
import json
import os
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from bench.bench_mlp import SIZES, SPEC
from bench.service_processes import free_port, http_call, setup, start, stop, wait_http

FEATURES = SIZES[0]
BLOCK_ROWS = 50_000
WORKER_SETTLE_S = 2.0  # wait_for_worker's wait after the worker registers


def make_rows(n: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    X = np.empty((n, FEATURES), np.float32)
    for start_row in range(0, n, BLOCK_ROWS):
        X[start_row:start_row + BLOCK_ROWS] = rng.standard_normal((min(BLOCK_ROWS, n - start_row), FEATURES),
                                                                  dtype=np.float32)
    return X


def x_profile(X: np.ndarray) -> dict:
    """The part of an upload's profile of X (bps.column_profiles) that the worker reads: its
    count of non-finite values, counted here (the whole profile of 784 million values takes minutes)."""
    non_finite = sum(int((~np.isfinite(X[start:start + BLOCK_ROWS])).sum()) for start in range(0, len(X), BLOCK_ROWS))
    return {"name": "X", "dtype": str(X.dtype), "kind": "numeric", "non_finite": non_finite}


def store_model_and_dataset(settings, X: np.ndarray, tmp: Path) -> tuple[str, str, object]:  # noqa: ANN001
    """The (untrained) MLP as a Model and X as an .npz Dataset of the bench tenant, written
    straight into the database in DATASET_CHUNK_BYTES chunks, with X's non-finite count as an
    upload records it."""
    from bps.db import session_scope
    from bps.models import Dataset, DatasetChunk, Job, Model, Tenant
    from bps.preprocessor import Preprocessor
    from worker.engine import Network

    net = Network.from_spec(SPEC, input_shape=(FEATURES,))
    weights = io.BytesIO()
    net.save(weights)
    prep = Preprocessor(source="array", mode="multiclass", input_shape=[FEATURES], classes=list(range(SIZES[-1])),
                        n_outputs=SIZES[-1])
    path = tmp / "rows.npz"
    np.savez(path, X=X, y=np.zeros(len(X), np.int64))
    with session_scope(settings.database_url) as session:
        tenant = session.query(Tenant).filter_by(name="bench").one()
        job = Job(tenant_id=tenant.id, dataset_id="bench", status="succeeded", spec=net.spec, task="classification")
        session.add(job)
        session.flush()
        model = Model(tenant_id=tenant.id, job_id=job.id, task="classification", classes=prep.classes,
                      input_shape=[FEATURES], spec=net.spec, preprocessing=prep.to_json(), weights=weights.getvalue())
        dataset = Dataset(tenant_id=tenant.id, name="rows.npz", format="npz", n_rows=len(X),
                          size_bytes=path.stat().st_size, sha256="", columns=[x_profile(X)],
                          shapes={"X": list(X.shape), "y": [len(X)]})
        session.add_all([model, dataset])
        session.flush()
        model_id, dataset_id = model.id, dataset.id
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for seq, block in enumerate(iter(lambda: handle.read(settings.dataset_chunk_bytes), b"")):
            digest.update(block)
            with session_scope(settings.database_url) as session:
                session.add(DatasetChunk(dataset_id=dataset_id, seq=seq, data=block))
    with session_scope(settings.database_url) as session:
        session.get(Dataset, dataset_id).sha256 = digest.hexdigest()
    path.unlink()
    settle(settings.database_url)
    return model_id, dataset_id, net


def settle(database_url: str) -> None:
    """The 3 GB just written checkpointed out of the WAL and on disk, as an uploaded dataset is
    long before it is predicted: else the kernel's writeback of it (30 s after the writes)
    and SQLite's first checkpoint land in the timed prediction, when the run happens to reach them."""
    from bps.db import engine

    with engine(database_url).connect() as connection:
        connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    os.sync()


def wait_for_worker(port: int, timeout_s: float = 300.0) -> None:
    """Until /healthz lists a live worker (it registers once started: Numba kernels loaded),
    and WORKER_SETTLE_S more for it to consume from the broker: the timed POST is not queued."""
    deadline = time.monotonic() + timeout_s
    while not json.loads(http_call(port, "GET", "/healthz", {})[1]).get("workers"):
        if time.monotonic() > deadline:
            raise RuntimeError(f"no worker registered within {timeout_s:g} s")
        time.sleep(0.5)
    time.sleep(WORKER_SETTLE_S)


def engine_predict_s(net, X: np.ndarray) -> float:  # noqa: ANN001
    start_s = time.perf_counter()
    net.predict(X)
    return time.perf_counter() - start_s


def poll_interval_s(elapsed_s: float, progress: float) -> float:
    """Half the time the progress says is left, within 0.05-1 s: about nine GETs for a 3 s
    prediction, and dense ones near the end. Each GET is CPU that the API takes from the
    worker's two BLAS threads on a 2-core machine: polling more densely (at a tenth of the time
    left) takes more of it from the run being measured."""
    left_s = elapsed_s * (1 - progress) / progress if progress > 0 else 1.0
    return min(1.0, max(0.05, left_s / 2))


def run_async_prediction(port: int, auth: dict, model_id: str, dataset_id: str) -> tuple[float, dict]:
    """Seconds from the POST to a GET that answers succeeded (poll_interval_s apart); the
    prediction, with the POST's and that GET's wall-clock times added (`posted_at`, `seen_at`)."""
    posted_at, start_s = time.time(), time.perf_counter()
    status, body = http_call(port, "POST", f"/v1/models/{model_id}/predictions", auth,
                             json.dumps({"dataset_id": dataset_id, "async": True}).encode())
    assert status == 202, body
    prediction = json.loads(body)
    while prediction["status"] in ("queued", "running"):
        time.sleep(poll_interval_s(time.perf_counter() - start_s, prediction["progress"]))
        prediction = json.loads(http_call(port, "GET", f"/v1/predictions/{prediction['id']}", auth)[1])
    elapsed, seen_at = time.perf_counter() - start_s, time.time()
    assert prediction["status"] == "succeeded", prediction
    return elapsed, {**prediction, "posted_at": posted_at, "seen_at": seen_at}


def worker_phases(log: Path) -> str:
    """The worker's account of its run (prediction_runner's success line), else a note."""
    lines = [line for line in log.read_text(errors="replace").splitlines() if "waiting for rows" in line]
    return lines[-1].split("rows; ", 1)[-1] if lines else "(no phase line in the worker's log)"


def resident_kib(pid: int, field: str = "VmRSS") -> int:
    """/proc's resident set (VmRSS) or its peak over the process's life (VmHWM), in KiB."""
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(f"{field}:"))


def process_tree(pid: int) -> list[int]:
    """`pid` and its descendants (the Celery pool's children of `bps worker`)."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    tree, frontier = [pid], [pid]
    while frontier:
        frontier = [child for child, parent in parents.items() if parent in frontier]
        tree += frontier
    return tree


def serving_pid(master_pid: int) -> int:
    """The gunicorn worker under `bps api` (which execs gunicorn: its pid is the master's)."""
    with open(f"/proc/{master_pid}/task/{master_pid}/children") as children:
        return int(children.read().split()[0])


def download_csv(port: int, auth: dict, prediction_id: str, api_pid: int) -> tuple[int, int, float, int, int]:
    """(bytes, rows, seconds, RSS KiB before, peak RSS KiB while streaming)."""
    before, peak, done = resident_kib(api_pid), [0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], resident_kib(api_pid))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    start_s = time.perf_counter()
    connection.request("GET", f"/v1/predictions/{prediction_id}/download?format=csv", headers=auth)
    response = connection.getresponse()
    assert response.status == 200, response.read()
    size = lines = 0
    while block := response.read(1 << 20):
        size, lines = size + len(block), lines + block.count(b"\n")
    elapsed = time.perf_counter() - start_s
    done.set()
    sampler.join()
    connection.close()
    return size, lines - 1, elapsed, before, peak[0]


def workload_parser(prog: str) -> argparse.ArgumentParser:
    """The options of this workload's size, shared with `python -m bench prediction_reads`."""
    parser = argparse.ArgumentParser(prog=prog)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--chunk-rows", type=int, default=10_000)
    return parser


def main(argv: list[str]) -> None:
    args, _ = workload_parser("python -m bench predictions").parse_known_args(argv)
    with tempfile.TemporaryDirectory(prefix="bps-bench-predictions-") as name:
        tmp = Path(name)
        settings, env, auth = setup(tmp)
        X = make_rows(args.rows)
        model_id, dataset_id, net = store_model_and_dataset(settings, X, tmp)
        env = {**env, "PORT": str(free_port()), "WEB_CONCURRENCY": "1", "PREDICTION_CHUNK_ROWS": str(args.chunk_rows)}
        api, worker = start(["api"], env, tmp / "api.log"), start(["worker", "--concurrency", "1"], env,
                                                                    tmp / "worker.log")
        try:
            port = int(env["PORT"])
            wait_http(port)
            wait_for_worker(port)
            engine_before = engine_predict_s(net, X)
            service_s, prediction = run_async_prediction(port, auth, model_id, dataset_id)
            engine_after = engine_predict_s(net, X)
            del X
            report(args, engine_before, engine_after, service_s, prediction)
            print(f"in the worker: {worker_phases(tmp / 'worker.log')}")
            worker_peak = max(resident_kib(pid, "VmHWM") for pid in process_tree(worker.pid))
            print(f"worker: peak RSS {worker_peak / 1024:.0f} MiB of its largest process (the dataset is "
                  f"{args.rows * FEATURES * 4 / 2**20:.0f} MiB)")
            size, rows, seconds, before, peak = download_csv(port, auth, prediction["id"], serving_pid(api.pid))
            print(f"CSV download: {rows} rows, {size / 1e6:.0f} MB in {seconds:.1f} s ({size / 1e6 / seconds:.0f} MB/s); "
                  f"API process RSS {before / 1024:.0f} MiB before, peak {peak / 1024:.0f} MiB while streaming")
        finally:
            stop(worker)
            stop(api)


def report(args, engine_before: float, engine_after: float, service_s: float, prediction: dict) -> None:  # noqa: ANN001
    from datetime import datetime

    engine_s = (engine_before + engine_after) / 2
    started, finished = (datetime.fromisoformat(prediction[key]).timestamp() for key in ("started_at", "finished_at"))
    in_worker = finished - started
    print(f"asynchronous prediction, {args.rows} rows x {FEATURES} float32 (.npz), MLP {'-'.join(map(str, SIZES))}, "
          f"chunks of {args.chunk_rows} rows")
    print(f"engine Network.predict   {engine_s:7.2f} s  {args.rows / engine_s:10.0f} rows/s "
          f"(before/after {engine_before:.2f}/{engine_after:.2f} s)")
    print(f"service POST -> succeeded {service_s:7.2f} s  {args.rows / service_s:10.0f} rows/s "
          f"(in the worker {in_worker:.2f} s)")
    print(f"  POST to claimed {started - prediction['posted_at']:.3f} s (API, broker poll, task start); "
          f"finished to seen {prediction['seen_at'] - finished:.3f} s (the last GETs' spacing)")
    print(f"service / engine: {engine_s / service_s:.2f}x rows/s (target >= 0.8x)")
