"""The README's curl walk-through, run verbatim by bash against real `bps api` and `bps worker`
processes on the embedded topology (SQLite and the file broker), in a directory laid out as a
checkout after `make run`: examples/ and var/dev-api-key. The one change is the API's port.
Every answer it prints is checked. Then every spec of examples/ trains well on its data set
through the same processes."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from tests.e2e.flow import Client, free_port, wait_healthy
from tests.examples.test_examples import CASES
from tests.faults.harness import bps_command, stop_processes

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow
DEFAULT_API = "http://127.0.0.1:8000"


def walkthrough_script() -> str:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## A walk-through with curl"):]
    start = section.index("```sh\n") + len("```sh\n")
    return section[start:section.index("```", start)]


def json_documents(text: str) -> list[dict]:
    """Every JSON object printed in `text`, in order (curl's bodies need not end in a newline)."""
    decoder, documents, position = json.JSONDecoder(), [], 0
    while (position := text.find("{", position)) >= 0:
        try:
            document, end = decoder.raw_decode(text, position)
        except json.JSONDecodeError:
            position += 1
            continue
        documents.append(document)
        position = end
    return documents


@pytest.fixture(scope="module")
def embedded_checkout(tmp_path_factory):  # noqa: ANN001
    """`bps api` and `bps worker` on SQLite and the file broker, and a directory with examples/
    and var/dev-api-key as `make run` leaves them."""
    tmp_path = tmp_path_factory.mktemp("checkout")
    var_dir = tmp_path / "var"
    env = {**os.environ, "BPS_VAR_DIR": str(var_dir), "DATABASE_URL": f"sqlite:///{var_dir}/bps.db",
           "BROKER_URL": f"sqla+sqlite:///{var_dir}/broker.db", "HOST": "127.0.0.1", "PORT": str(free_port()),
           "WEB_CONCURRENCY": "1", "LOG_LEVEL": "WARNING"}
    var_dir.mkdir()
    for args in (("migrate",), ("keys", "create", "readme")):
        done = subprocess.run(bps_command(*args), env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
    (var_dir / "dev-api-key").write_text(done.stdout.strip().splitlines()[-1] + "\n")
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    logs = {name: open(tmp_path / f"{name}.log", "wb") for name in ("api", "worker")}
    processes = [subprocess.Popen(bps_command("api"), env=env, stdout=logs["api"], stderr=subprocess.STDOUT),
                 subprocess.Popen(bps_command("worker", "--queues", "cpu"), env=env, stdout=logs["worker"],
                                  stderr=subprocess.STDOUT)]
    base_url = f"http://127.0.0.1:{env['PORT']}"
    try:
        wait_healthy(Client(base_url), alive=lambda: all(p.poll() is None for p in processes))
        yield tmp_path, base_url
    finally:
        stop_processes(processes, grace_s=30)
        for log in logs.values():
            log.close()


def test_the_readme_walkthrough_runs_verbatim(embedded_checkout) -> None:  # noqa: ANN001
    checkout, base_url = embedded_checkout
    script = walkthrough_script()
    assert f"API={DEFAULT_API}" in script and "examples/iris.csv" in script
    done = subprocess.run(["bash", "-eu", "-c", script.replace(DEFAULT_API, base_url)], cwd=checkout,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-3000:])

    # stderr: the upload's answer (tee), the submission's headers and answer
    dataset, submitted = json_documents(done.stderr)
    assert (dataset["format"], dataset["n_rows"], dataset["columns"][-1]["name"]) == ("csv", 150, "species")
    assert re.search(r"HTTP/[\d.]+ 202", done.stderr)
    assert re.search(rf"(?i)location: /v1/jobs/{submitted['id']}\s", done.stderr)
    assert submitted["dataset_id"] == dataset["id"] and submitted["spec"]["optimizer"]["beta1"] == 0.9

    # stdout: the ended job, its epochs, the prediction, the refused cancel
    job, epochs, prediction, cancel = json_documents(done.stdout)
    assert job["id"] == submitted["id"] and job["status"] == "succeeded" and job["progress"] == 1.0
    assert [e["epoch"] for e in epochs["epochs"]] == list(range(1, len(epochs["epochs"]) + 1))
    assert len(epochs["epochs"]) >= 10 and all(e["loss"] is not None for e in epochs["epochs"])
    assert prediction["model_id"] == job["model_id"] and prediction["predictions"] == ["setosa", "virginica"]
    assert all(abs(sum(p) - 1) < 1e-4 for p in prediction["probabilities"])
    assert cancel["status"] == 409

    with np.load(checkout / "model.npz", allow_pickle=False) as model:
        assert model["0.weight"].shape == (16, 4) and model["1.weight"].shape == (3, 16)


def published_spec_schema(client: Client):  # noqa: ANN201
    """A validator of NetworkSpec as the service's /openapi.json publishes it."""
    import jsonschema
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT202012

    document = client.json("GET", "/openapi.json")[1]
    registry = Registry().with_resource("urn:openapi", Resource.from_contents(document, DRAFT202012))
    return jsonschema.Draft202012Validator({"$ref": "urn:openapi#/components/schemas/NetworkSpec"},
                                           registry=registry)


def finished(client: Client, job: dict, timeout: float = 180.0) -> dict:
    deadline = time.monotonic() + timeout
    while job["status"] in ("queued", "running"):
        assert time.monotonic() < deadline, f"job still {job['status']} after {timeout} s"
        time.sleep(0.5)
        job = client.json("GET", f"/v1/jobs/{job['id']}")[1]
    return job


@pytest.mark.parametrize("spec_file", sorted(CASES))
def test_each_example_spec_trains_well_through_the_service(embedded_checkout, spec_file: str) -> None:  # noqa: ANN001
    """As the README's examples/ table says: the data file uploaded, the spec file as it is."""
    checkout, base_url = embedded_checkout
    client = Client(base_url, (checkout / "var" / "dev-api-key").read_text().strip())
    data_file, target, input_shape, _ = CASES[spec_file]
    status, dataset = client.upload(data_file, (checkout / "examples" / data_file).read_bytes())
    assert status == 201, dataset
    spec = json.loads((checkout / "examples" / "specs" / spec_file).read_text())
    request = {"dataset_id": dataset["id"], "spec": spec}
    request.update({"target": target} if target else {}, **({"input_shape": list(input_shape)} if input_shape else {}))
    status, job = client.json("POST", "/v1/jobs", request)
    assert status == 202, job
    job = finished(client, job)
    assert job["status"] == "succeeded", job
    status, model = client.json("GET", f"/v1/models/{job['model_id']}")
    assert status == 200 and model["spec"] == job["spec"]
    published_spec_schema(client).validate(job["spec"])  # the normalised spec is a NetworkSpec as published
    if job["task"] == "classification":
        assert job["metrics"]["val_accuracy"] >= 0.85, job["metrics"]
    else:  # petal width's variance is 0.58: a val MSE under 0.1 is an R² above 0.8
        assert job["metrics"]["val_loss"] < 0.1, job["metrics"]
