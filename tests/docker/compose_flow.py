"""What tests/docker/smoke.sh checks once the compose stack is up (run by it; not a pytest
module): the user's flow through the API with one worker, then two workers and one of them
crashed mid-job (the job ends with every epoch once, taken over; the crashed container is
restarted by its restart policy), /metrics parsed, the JSON logs of the workers, and the
workers stopped mid-job handing their job back to the queue.

    python -m tests.docker.compose_flow BASE_URL API_KEY   (env COMPOSE: the compose command line)
"""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
import urllib.request
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.flow import EPOCHS, Client, blobs, csv_bytes, train_and_predict, wait_healthy

LONG_EPOCHS = 300  # about 15 s on one worker: long enough to be caught mid-job


def say(message: str) -> None:
    print(f"[smoke {time.strftime('%H:%M:%S')}] {message}", flush=True)


def compose(*args: str, check: bool = True) -> str:
    command = shlex.split(os.environ["COMPOSE"]) + list(args)
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(command)} failed: {result.stderr[-2000:]}")
    return result.stdout


def sql(query: str) -> list[list[str]]:
    out = compose("exec", "-T", "postgres", "psql", "-U", "bps", "-d", "bps", "-tA", "-F", "|", "-c", query)
    return [line.split("|") for line in out.splitlines() if line.strip()]


def wait(condition: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def live_workers(client: Client) -> int:
    status, body = client.request("GET", "/healthz")
    return len(body["workers"]) if status == 200 else 0


def submit_long_job(client: Client, epochs: int = LONG_EPOCHS) -> str:
    status, dataset = client.upload("long.csv", csv_bytes(blobs(400, seed=3)))
    assert status == 201, dataset
    spec = {"layers": [{"type": "dense", "units": 64, "activation": "relu"}, {"type": "dense", "activation": "softmax"}],
            "loss": "cross_entropy", "optimizer": {"type": "sgd", "learning_rate": 0.01},
            "epochs": epochs, "batch_size": 2, "validation_split": 0.1, "early_stopping": None}
    status, job = client.json("POST", "/v1/jobs", {"dataset_id": dataset["id"], "target": "species", "spec": spec})
    assert status == 202, job
    return job["id"]


def crash_worker_of(job_id: str) -> str:
    """SIGKILL the main process of the container running the job, as the OOM killer would:
    a crash, which the restart policy undoes (`docker kill` would count as a manual stop)."""
    def running() -> list[str] | None:
        rows = sql(f"SELECT worker_id, epoch FROM jobs WHERE id = '{job_id}' AND status = 'running'")
        return rows[0] if rows and int(rows[0][1]) >= 3 else None

    worker_id, epoch = wait(running, 120, "the long job to run its third epoch")
    container = worker_id.rsplit("@", 1)[1]  # the worker's hostname: its container's short id
    pid = subprocess.run(["docker", "inspect", "-f", "{{.State.Pid}}", container], capture_output=True,
                         text=True, check=True).stdout.strip()
    say(f"crashing worker {worker_id} (container {container}, host pid {pid}) at epoch {epoch}")
    try:
        os.kill(int(pid), 9)
    except PermissionError:  # a remote or rootless engine: the closest we can do
        subprocess.run(["docker", "kill", container], check=True, capture_output=True)
    return container


def check_long_job(client: Client, job_id: str, crashed: str) -> None:
    def finished() -> dict | None:
        status, job = client.json("GET", f"/v1/jobs/{job_id}")
        assert status == 200, job
        return job if job["status"] not in ("queued", "running") else None

    job = wait(finished, 240, "the long job to finish after the crash")
    assert job["status"] == "succeeded", job
    status, body = client.json("GET", f"/v1/jobs/{job_id}/epochs")
    assert [e["epoch"] for e in body["epochs"]] == list(range(1, LONG_EPOCHS + 1)), "each epoch exactly once"
    attempts = sql(f"SELECT attempt FROM jobs WHERE id = '{job_id}'")[0][0]
    assert int(attempts) >= 2, f"the job was not taken over (attempt {attempts})"
    restarts = subprocess.run(["docker", "inspect", "-f", "{{.RestartCount}}", crashed], capture_output=True,
                              text=True, check=True).stdout.strip()
    say(f"long job succeeded at attempt {attempts}; every epoch once; crashed container restarted {restarts} time(s)")
    assert int(restarts) >= 1, "the crashed worker container was not restarted"


def check_metrics(base_url: str, epochs_total: int, predicted_rows: int) -> None:
    with urllib.request.urlopen(base_url + "/metrics", timeout=30) as response:  # no API key
        families = {f.name: f for f in text_string_to_metric_families(response.read().decode())}
    value = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families.values() for s in f.samples}
    assert value[("bps_jobs", (("status", "succeeded"),))] == 2
    assert value[("bps_epoch_duration_seconds_count", ())] == epochs_total
    assert value[("bps_prediction_rows_total", ())] == predicted_rows
    assert value[("bps_workers", (("device", "cpu"),))] >= 1 and ("bps_queue_depth", (("queue", "cpu"),)) in value
    routes = {dict(labels).get("route") for name, labels in value if name.startswith("bps_http_request")}
    assert "/v1/jobs/<job_id>" in routes, routes
    say(f"/metrics: {len(families)} families; {epochs_total} epochs, {predicted_rows} rows predicted")


def check_json_logs(job_id: str) -> None:
    lines = [line.split("| ", 1)[-1] for line in compose("logs", "--no-color", "worker-cpu").splitlines()]
    records = [json.loads(line) for line in lines if line.startswith("{")]
    about = [r for r in records if r.get("job_id") == job_id]
    assert about and all("attempt" in r and r.get("worker") for r in about), about[:3]
    # the restarted container may be the one that takes over: same hostname, pid 1, same name
    assert {1, 2} <= {r["attempt"] for r in about}, "lines of both attempts, each naming it"
    say(f"worker logs: {len(records)} JSON lines, {len(about)} about the long job, from "
        f"{len({r['worker'] for r in about})} workers")


def check_stop_hands_the_job_back(client: Client) -> None:
    """`docker compose stop` (as `down` does): within stop_grace_period each worker stops its
    job at the next batch and puts it back in the queue, keeping its epochs, and exits 0."""
    job_id = submit_long_job(client, epochs=10 * LONG_EPOCHS)  # never to finish: the workers stop
    wait(lambda: sql(f"SELECT 1 FROM jobs WHERE id = '{job_id}' AND status = 'running' AND epoch >= 3"), 120,
         "a third long job to run its third epoch")
    started = time.monotonic()
    compose("stop", "worker-cpu")
    took = time.monotonic() - started
    status, job = client.json("GET", f"/v1/jobs/{job_id}")
    status, body = client.json("GET", f"/v1/jobs/{job_id}/epochs")
    kept = [e["epoch"] for e in body["epochs"]]
    assert job["status"] == "queued" and kept == list(range(1, len(kept) + 1)) and len(kept) >= 3, (job, kept)
    containers = compose("ps", "-q", "worker-cpu").split()
    codes = [subprocess.run(["docker", "inspect", "-f", "{{.State.ExitCode}}", c], capture_output=True, text=True,
                            check=True).stdout.strip() for c in containers]
    assert codes and set(codes) == {"0"}, codes
    say(f"compose stop: the running job went back to the queue with its {len(kept)} epochs; "
        f"{len(codes)} workers exited 0 in {took:.0f} s")


def main(base_url: str, key: str) -> int:
    client = Client(base_url, key)
    wait_healthy(client, timeout=120)
    wait(lambda: live_workers(client) >= 1, 120, "the first worker")
    first = train_and_predict(client, timeout=120)
    say(f"flow job {first['id']} succeeded with one worker; held-out predictions right")
    compose("up", "-d", "--no-build", "--no-recreate", "--scale", "worker-cpu=2", "worker-cpu")
    wait(lambda: live_workers(client) >= 2, 180, "two live workers")
    say("scaled to two workers")
    job_id = submit_long_job(client)
    crashed = crash_worker_of(job_id)
    check_long_job(client, job_id, crashed)
    check_metrics(base_url, epochs_total=EPOCHS + LONG_EPOCHS, predicted_rows=30)
    check_json_logs(job_id)
    check_stop_hands_the_job_back(client)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
