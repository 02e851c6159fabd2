"""The user's flow over real HTTP (urllib only): upload a CSV with string labels, submit a job,
poll it to `succeeded`, read its epochs, predict held-out rows."""
from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
import uuid
from typing import Any

import numpy as np

LABELS = ("setosa", "versicolor", "virginica")
EPOCHS = 12


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def blobs(n_per_class: int, seed: int) -> list[tuple[float, float, float, str]]:
    """Three well separated 3-D blobs, one per string label."""
    rng = np.random.default_rng(seed)
    rows = []
    for k, label in enumerate(LABELS):
        centre = np.array([3.0 * k, -2.0 * k, 1.5 * (k % 2)])
        rows += [(*map(float, point), label) for point in centre + rng.normal(scale=0.4, size=(n_per_class, 3))]
    return rows


def csv_bytes(rows) -> bytes:  # noqa: ANN001
    lines = ["a,b,c,species"] + [f"{a:.4f},{b:.4f},{c:.4f},{label}" for a, b, c, label in rows]
    return ("\n".join(lines) + "\n").encode()


class Client:
    def __init__(self, base_url: str, key: str | None = None) -> None:
        self.base_url, self.key = base_url, key

    def request(self, method: str, path: str, body: bytes | None = None,
                content_type: str | None = None) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {self.key}"} if self.key else {}
        if content_type:
            headers["Content-Type"] = content_type
        req = urllib.request.Request(self.base_url + path, data=body, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=30) as response:
                status, raw = response.status, response.read()
        except urllib.error.HTTPError as error:
            status, raw = error.code, error.read()
        return status, (json.loads(raw) if raw else None)

    def json(self, method: str, path: str, payload: Any = None) -> tuple[int, Any]:
        body = None if payload is None else json.dumps(payload).encode()
        return self.request(method, path, body, "application/json" if body is not None else None)

    def upload(self, filename: str, data: bytes, name: str | None = None) -> tuple[int, Any]:
        boundary = uuid.uuid4().hex
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\n"
                f"Content-Type: text/csv\r\n\r\n").encode() + data + b"\r\n"
        if name is not None:
            body += f"--{boundary}\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\n{name}\r\n".encode()
        body += f"--{boundary}--\r\n".encode()
        return self.request("POST", "/v1/datasets", body, f"multipart/form-data; boundary={boundary}")


def wait_healthy(client: Client, timeout: float = 60.0, alive=lambda: True) -> dict:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert alive(), "a service process exited while starting"
        try:
            status, body = client.request("GET", "/healthz")
            if status == 200:
                return body
        except (urllib.error.URLError, ConnectionError, OSError):
            pass
        time.sleep(0.3)
    raise AssertionError("the API did not become healthy")


def train_and_predict(client: Client, timeout: float = 60.0) -> dict:
    """Runs the whole flow with assertions; returns the finished job."""
    train, held_out = blobs(30, seed=1), blobs(10, seed=2)
    status, dataset = client.upload("flowers.csv", csv_bytes(train))
    assert status == 201, dataset
    assert dataset["n_rows"] == len(train)
    spec = {
        "layers": [{"type": "dense", "units": 16, "activation": "relu"}, {"type": "dense", "activation": "softmax"}],
        "loss": "cross_entropy", "optimizer": {"type": "adam", "learning_rate": 0.05},
        "epochs": EPOCHS, "batch_size": 16, "validation_split": 0.2, "early_stopping": None,
    }
    status, job = client.json("POST", "/v1/jobs", {"dataset_id": dataset["id"], "target": "species", "spec": spec})
    assert status == 202, job
    deadline = time.monotonic() + timeout
    while job["status"] in ("queued", "running"):
        assert time.monotonic() < deadline, f"job still {job['status']} after {timeout} s"
        time.sleep(0.25)
        status, job = client.json("GET", f"/v1/jobs/{job['id']}")
        assert status == 200, job
    assert job["status"] == "succeeded", job
    assert job["progress"] == 1.0 and job["model_id"]

    status, body = client.json("GET", f"/v1/jobs/{job['id']}/epochs")
    assert status == 200
    assert [e["epoch"] for e in body["epochs"]] == list(range(1, EPOCHS + 1))
    assert all(e["loss"] is not None and e["grad_norms"] for e in body["epochs"])

    records = [{"a": a, "b": b, "c": c} for a, b, c, _ in held_out]
    status, prediction = client.json("POST", f"/v1/models/{job['model_id']}/predictions", {"records": records})
    assert status == 201, prediction
    assert prediction["n"] == len(held_out) and set(prediction["predictions"]) <= set(LABELS)
    accuracy = np.mean([p == row[3] for p, row in zip(prediction["predictions"], held_out)])
    assert accuracy >= 0.9, f"held-out accuracy {accuracy:.2f}"
    assert all(abs(sum(p) - 1.0) < 1e-4 for p in prediction["probabilities"])
    return job
