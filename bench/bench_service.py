"""Issue 3's service benchmarks, each printed next to an anchor measured in the same run:

- prediction latency, 1 and 1,000 rows, warm model (p50/p95): Flask test client and real
  gunicorn (`bps api`); anchor: the engine's own `Network.predict` on the same rows;
- status polls per second under gunicorn (2 workers, 4 client threads on 127.0.0.1, 5 s);
  anchor: the same GET through the in-process test client, one thread;
- submit-to-running latency (p50/p95) with the embedded broker and with Redis (real `bps worker`);
  anchor: the POST /v1/jobs request itself;
- service overhead: end-to-end job time (submit -> succeeded) / engine-only fit time.

`python -m bench service`. Uses a throw-away SQLite database in a temp dir; Redis at
BPS_BENCH_REDIS_URL (default redis://127.0.0.1:6379/15) is skipped when unreachable.
"""
from __future__ import annotations

import io
import json
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from bench.service_processes import free_port, http_call, http_call_multipart, redis_url, setup, start, stop, wait_http

N_FEATURES, N_ROWS = 16, 4000
SPEC = {"layers": [{"type": "dense", "units": 64, "activation": "relu"}, {"type": "dense", "activation": "softmax"}],
        "loss": "cross_entropy", "optimizer": {"type": "adam", "learning_rate": 0.001}, "epochs": 1,
        "batch_size": 64, "validation_split": 0.0, "seed": 0, "device": "cpu"}


def pct(values: list[float]) -> str:
    ms = np.asarray(values) * 1000
    return f"p50 {np.percentile(ms, 50):7.2f} ms  p95 {np.percentile(ms, 95):7.2f} ms"


def make_csv(n_rows: int = N_ROWS) -> bytes:
    rng = np.random.default_rng(0)
    X = rng.standard_normal((n_rows, N_FEATURES))
    y = (X[:, 0] + X[:, 1] > 0).astype(int)
    lines = [",".join([f"f{i}" for i in range(N_FEATURES)] + ["label"])]
    lines += [",".join(f"{v:.5f}" for v in row) + f",{label}" for row, label in zip(X, y, strict=True)]
    return ("\n".join(lines) + "\n").encode()


def train_model(client, auth, settings, dataset_id: str) -> tuple[str, object]:  # noqa: ANN001
    """A model stored as the worker would store it; returns (model id, the engine Network)."""
    from sqlalchemy import select

    from bps.db import session_scope
    from bps.models import Dataset, Job, Model
    from bps.preprocessing import prepare_training_data
    from worker.engine import Network

    raw = make_csv()
    X, y, prep = prepare_training_data(raw, "csv", target="label", features=None, input_shape=None,
                                       task="cross_entropy")
    net = Network.from_spec(SPEC, input_shape=X.shape[1:], n_outputs=prep.n_outputs)
    net.fit(X, y)
    buffer = io.BytesIO()
    net.save(buffer)
    with session_scope(settings.database_url) as session:
        dataset = session.scalar(select(Dataset).where(Dataset.id == dataset_id))
        job = Job(tenant_id=dataset.tenant_id, dataset_id=dataset.id, status="succeeded", spec=net.spec,
                  target="label", task="classification")
        session.add(job)
        session.flush()
        model = Model(tenant_id=dataset.tenant_id, job_id=job.id, task=prep.task, features=prep.features,
                      target="label", classes=prep.classes, input_shape=None, spec=net.spec, metrics={},
                      preprocessing=prep.to_json(), weights=buffer.getvalue())
        session.add(model)
        session.flush()
        return model.id, (net, prep)


def time_calls(call, n: int) -> list[float]:  # noqa: ANN001
    call()  # warm
    times = []
    for _ in range(n):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return times


def bench_predictions(client, auth, model_id: str, engine, port: int | None) -> None:  # noqa: ANN001
    net, prep = engine
    rng = np.random.default_rng(1)
    for rows in (1, 1000):
        instances = rng.standard_normal((rows, N_FEATURES)).round(4).tolist()
        body = json.dumps({"instances": instances}).encode()
        X = prep.transform_instances(instances)
        anchor = time_calls(lambda: net.predict(X), 50)  # noqa: B023
        n = 200 if rows == 1 else 30
        path = f"/v1/models/{model_id}/predictions"
        flask = time_calls(lambda: client.post(path, data=body, headers=auth, content_type="application/json"), n)  # noqa: B023
        print(f"predict {rows:5d} rows  engine only      {pct(anchor)}")
        print(f"predict {rows:5d} rows  flask test client {pct(flask)}   ratio p50 "
              f"{np.median(flask) / np.median(anchor):6.1f}x")
        if port:
            served = time_calls(lambda: http_call(port, "POST", path, auth, body), n)  # noqa: B023
            print(f"predict {rows:5d} rows  gunicorn http     {pct(served)}   ratio p50 "
                  f"{np.median(served) / np.median(anchor):6.1f}x")


def bench_polls(client, auth, job_path: str, port: int, seconds: float = 5.0, threads: int = 4) -> None:  # noqa: ANN001
    in_process = time_calls(lambda: client.get(job_path, headers=auth), 200)
    counts = [0] * threads
    stop = time.monotonic() + seconds

    def poll(index: int) -> None:
        while time.monotonic() < stop:
            if http_call(port, "GET", job_path, auth)[0] == 200:
                counts[index] += 1

    workers = [threading.Thread(target=poll, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    print(f"status polls/s  gunicorn (2 workers, {threads} client threads) {sum(counts) / seconds:8.0f}   "
          f"anchor in-process 1 thread {1 / np.mean(in_process):8.0f}/s")


def submit_and_wait(port: int, auth: dict, body: dict, until: str, timeout_s: float = 60,
                    quiet_s: float = 0.0) -> tuple[float, float, str]:
    """(POST latency, seconds from submit until the job reaches `until` or a later state, job id).
    Polls every 10 ms, but only after `quiet_s`: on a 2-core machine a client polling at
    100/s for the whole of a long job would take CPU from the worker it is timing."""
    start = time.perf_counter()
    status, raw = http_call(port, "POST", "/v1/jobs", auth, json.dumps(body).encode())
    posted = time.perf_counter() - start
    if status != 202:
        raise RuntimeError(f"submit answered {status}: {raw[:300]!r}")
    job_id = json.loads(raw)["id"]
    time.sleep(max(0.0, quiet_s - (time.perf_counter() - start)))
    later = {"running": ("running", "succeeded", "failed", "cancelled"), "succeeded": ("succeeded", "failed")}[until]
    while time.perf_counter() - start < timeout_s:
        job = json.loads(http_call(port, "GET", f"/v1/jobs/{job_id}", auth)[1])
        if job["status"] in later:
            if until == "succeeded" and job["status"] != "succeeded":
                raise RuntimeError(f"job failed: {job['error']}")
            return posted, time.perf_counter() - start, job_id
        time.sleep(0.01)
    raise RuntimeError(f"job {job_id} did not reach {until} in {timeout_s} s")


def bench_submit_to_running(port: int, auth: dict, dataset_id: str, label: str, n: int = 6) -> None:
    body = {"dataset_id": dataset_id, "target": "label", "spec": {**SPEC, "epochs": 1}}
    results = [submit_and_wait(port, auth, body, "succeeded") for _ in range(n)]  # one at a time: worker is free
    posted = [result[0] for result in results]
    running, pauses = [], np.random.default_rng(2).uniform(0.0, 0.3, n)
    for pause in pauses:
        _, to_running, job_id = submit_and_wait(port, auth, body, "running")
        running.append(to_running)
        wait_finished(port, auth, job_id)  # the next job must find the worker free, not queue behind this one
        time.sleep(pause)  # a real submit comes at any moment, not in step with the broker's polling
    print(f"submit->running {label:9s} {pct(running)}   anchor POST /v1/jobs {pct(posted)}")
    time.sleep(1.5)


def wait_finished(port: int, auth: dict, job_id: str, timeout_s: float = 60) -> None:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if json.loads(http_call(port, "GET", f"/v1/jobs/{job_id}", auth)[1])["status"] not in ("queued", "running"):
            return
        time.sleep(0.01)
    raise RuntimeError(f"job {job_id} did not finish in {timeout_s} s")


def blas_threads(net) -> int:  # noqa: ANN001
    """The BLAS threads `fit` uses: the worker process inherits this process's environment
    (BPS_BLAS_THREADS, *_NUM_THREADS) and runs the same engine code, so it uses as many."""
    from worker.engine import threads

    return net.n_threads or threads.job_threads()


def bench_overhead(port: int, auth: dict, target_s: float = 10.0, n_rows: int = 60_000) -> None:
    """A job of about `target_s` on a 60,000-row upload. Its epochs are short (tens of ms with
    the fused kernels), the hard case for the per-epoch bookkeeping (epoch row + checkpoint in
    one transaction), which costs the same whatever an epoch's length: hence the per-epoch line."""
    from bps.preprocessing import prepare_training_data
    from worker.engine import Network

    raw = make_csv(n_rows)
    status, body = http_call_multipart(port, auth, raw)
    dataset_id = json.loads(body)["id"]
    X, y, prep = prepare_training_data(raw, "csv", target="label", features=None, input_shape=None,
                                       task="cross_entropy")
    one = Network.from_spec({**SPEC, "epochs": 1}, input_shape=X.shape[1:], n_outputs=prep.n_outputs)
    start = time.perf_counter()
    one.fit(X, y)
    epochs = max(1, int(target_s / (time.perf_counter() - start)))
    spec = {**SPEC, "epochs": epochs}

    def engine_fit() -> tuple[float, object]:
        net = Network.from_spec(spec, input_shape=X.shape[1:], n_outputs=prep.n_outputs)
        start = time.perf_counter()
        net.fit(X, y)
        return time.perf_counter() - start, net

    # The anchor is timed before AND after the job and averaged: on a shared machine the load
    # drifts, and an anchor taken only before would charge that drift to the service.
    before_s, net = engine_fit()
    _, end_to_end, job_id = submit_and_wait(port, auth, {"dataset_id": dataset_id, "target": "label", "spec": spec},
                                            "succeeded", timeout_s=10 * target_s + 60, quiet_s=0.9 * before_s)
    after_s, _ = engine_fit()
    engine_s = (before_s + after_s) / 2
    print(f"service overhead ({epochs} epochs, {blas_threads(net)} BLAS threads, {net.dtype}): "
          f"end-to-end {end_to_end:6.2f} s / engine fit {engine_s:6.2f} s"
          f" = {end_to_end / engine_s:5.3f}x (target <= 1.05); engine fit before/after {before_s:.2f}/{after_s:.2f} s")
    epochs_body = json.loads(http_call(port, "GET", f"/v1/jobs/{job_id}/epochs", auth)[1])
    in_worker = sum(epoch["duration_s"] or 0.0 for epoch in epochs_body["epochs"])
    print(f"  of which epochs as timed by the worker {in_worker:6.2f} s ({in_worker / epochs * 1000:.1f} ms each); "
          f"bookkeeping and start-up {end_to_end - in_worker:5.2f} s = {(end_to_end - in_worker) / engine_s:5.3f} "
          f"of the engine fit, {(end_to_end - in_worker) / epochs * 1000:.1f} ms per epoch")


def run_with_workers(settings, env: dict, auth: dict, dataset_id: str, tmp: Path, broker: str, label: str,  # noqa: ANN001
                     overhead: bool) -> None:
    env = {**env, "BROKER_URL": broker, "PORT": str(free_port()), "WEB_CONCURRENCY": "2"}
    api = start(["api"], env, tmp / f"api-{label}.log")
    worker = start(["worker", "--concurrency", "1"], env, tmp / f"worker-{label}.log")
    try:
        port = int(env["PORT"])
        wait_http(port)
        time.sleep(2.0)  # the worker connects to the broker
        bench_submit_to_running(port, auth, dataset_id, label)
        if overhead:
            bench_overhead(port, auth)
    finally:
        stop(worker)
        stop(api)


def setup_with_model(tmp: Path):  # noqa: ANN201
    """setup() plus an in-process test client, an uploaded dataset and a trained model:
    (settings, env, auth, client, dataset id, model id, (net, preprocessor))."""
    from service.app import create_app

    settings, env, auth = setup(tmp)
    client = create_app(replace(settings, rate_limit_per_minute=0)).test_client()
    upload = {"file": (io.BytesIO(make_csv()), "bench.csv")}
    dataset_id = client.post("/v1/datasets", data=upload, headers=auth,
                             content_type="multipart/form-data").get_json()["id"]
    model_id, engine = train_model(client, auth, settings, dataset_id)
    return settings, env, auth, client, dataset_id, model_id, engine


def main(argv: list[str]) -> None:
    with tempfile.TemporaryDirectory(prefix="bps-bench-") as name:
        tmp = Path(name)
        settings, env, auth, client, dataset_id, model_id, engine = setup_with_model(tmp)
        env_api = {**env, "PORT": str(free_port()), "WEB_CONCURRENCY": "2"}
        api = start(["api"], env_api, tmp / "api.log")
        try:
            port = int(env_api["PORT"])
            wait_http(port)
            bench_predictions(client, auth, model_id, engine, port)
            from sqlalchemy import select

            from bps.db import session_scope
            from bps.models import Job
            with session_scope(settings.database_url) as session:
                job_id = session.scalar(select(Job.id))
            bench_polls(client, auth, f"/v1/jobs/{job_id}", port)
        finally:
            stop(api)
        run_with_workers(settings, env, auth, dataset_id, tmp, env["BROKER_URL"], "embedded", overhead=True)
        url = redis_url()
        if url is None:
            print("submit->running redis: not run (no Redis at BPS_BENCH_REDIS_URL)")
        else:
            run_with_workers(settings, env, auth, dataset_id, tmp, url, "redis", overhead=False)


if __name__ == "__main__":
    main(sys.argv[1:])
