"""The client's tests run against real `bps api` and `bps worker` processes on the embedded
topology (SQLite file, the serverless broker), started once for the package (each start and
stop took 4-5 s, six modules use it): the tests find their own items by id, and the jobs and
asynchronous predictions a test leaves queued or running are ended after it (cancelled; the
predictions waited for) by no_job_outlives_its_test; MAX_PREDICTION_ROWS is small so that file predictions must be chunked."""
from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from bps.db import make_engine
from bps.models import Base
from tests.faults.harness import bps_command, free_port, stop_process_groups, wait_for

MAX_PREDICTION_ROWS = 7
ROOT = Path(__file__).resolve().parents[2]
IRIS = ROOT / "examples" / "iris.csv"
SPEC = {"layers": [{"type": "dense", "units": 16, "activation": "relu"}, {"type": "dense", "activation": "softmax"}],
        "loss": "cross_entropy", "optimizer": {"type": "adam", "learning_rate": 0.02}, "epochs": 6,
        "batch_size": 16, "validation_split": 0.2, "seed": 0, "device": "cpu"}


def mock_client(handler, **kwargs):  # noqa: ANN001, ANN003, ANN201
    """A Client whose every request goes to `handler` (httpx.MockTransport) instead of a server."""
    from bps_client import Client

    transport = httpx.MockTransport(handler)
    return Client("http://bps.test", "k", http=httpx.Client(base_url="http://bps.test", transport=transport), **kwargs)


@dataclass
class Service:
    url: str
    key: str
    other_key: str
    env: dict[str, str]


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _key(env: dict[str, str], tenant: str) -> str:
    out = subprocess.run(bps_command("keys", "create", tenant), env=env, capture_output=True, text=True, check=True)
    return out.stdout.strip().splitlines()[-1]


def _create_schema(database_url: str) -> None:
    """The models' schema, as the other SQLite tests make it (migrations have their own test)."""
    engine = make_engine(database_url)
    Base.metadata.create_all(engine)
    engine.dispose()


@pytest.fixture(scope="package")
def service(tmp_path_factory) -> Iterator[Service]:  # noqa: ANN001
    tmp = tmp_path_factory.mktemp("bps")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BPS_") or k == "BPS_BLAS_THREADS"}
    env.update(DATABASE_URL=f"sqlite:///{tmp}/bps.db", BROKER_URL=f"sqla+sqlite:///{tmp}/broker.db",
               BPS_VAR_DIR=str(tmp / "var"), HOST="127.0.0.1", PORT=str(port), WEB_CONCURRENCY="1",
               MAX_PREDICTION_ROWS=str(MAX_PREDICTION_ROWS), RATE_LIMIT_PER_MINUTE="0", LOG_LEVEL="WARNING",
               EVENT_POLL_INTERVAL_S="0.1", BPS_BLAS_THREADS="1")
    _create_schema(env["DATABASE_URL"])
    keys = (_key(env, "client-tests"), _key(env, "someone-else"))
    processes = []
    for name, args in (("api", ("api",)), ("worker", ("worker", "--concurrency", "1"))):
        with open(tmp / f"{name}.log", "wb") as log:
            processes.append(subprocess.Popen(bps_command(*args), env=env, stdout=log, stderr=subprocess.STDOUT,
                                              start_new_session=True))
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _healthy(url), 60, "the API to start", alive=lambda: all(p.poll() is None for p in processes))
        yield Service(url, keys[0], keys[1], env)
    finally:
        stop_process_groups(processes)


@pytest.fixture(autouse=True)
def no_job_outlives_its_test(request) -> Iterator[None]:  # noqa: ANN001
    """After each test that uses the service: every job of either tenant still queued or running
    is cancelled and waited for, and every asynchronous prediction still queued or running is
    waited for (they cannot be cancelled). A running job writes its partial model as it stops, and
    a prediction its rows: neither must appear in the middle of a later test's listings."""
    clients = request.getfixturevalue("tenant_clients") if "service" in request.fixturenames else ()
    yield
    for client in clients:
        end_active_jobs(client)
        wait_for_active_predictions(client)


def end_active_jobs(client) -> None:  # noqa: ANN001
    """Cancels each job of the client's tenant still queued or running and waits for each to end,
    in whatever status: a running job that reaches its end before it sees the cancel succeeds, and
    cancellation itself has its own tests."""
    from bps_client import ApiError, JobFailed

    active = [job["id"] for status in ("queued", "running") for job in client.iter_jobs(status=status)]
    for job_id in active:
        try:
            client.cancel(job_id)
        except ApiError as error:
            if error.status != 409:  # a 409: it has ended since it was listed
                raise
    for job_id in active:
        with contextlib.suppress(JobFailed):
            client.wait(job_id, timeout=60, poll_interval=0.1)


def wait_for_active_predictions(client) -> None:  # noqa: ANN001
    from bps_client import PredictionFailed

    for prediction in [p for p in client.iter_predictions() if p["status"] in ("queued", "running")]:
        with contextlib.suppress(PredictionFailed):
            client.wait_prediction(prediction["id"], timeout=60, poll_interval=0.1)


@pytest.fixture(scope="package")
def tenant_clients(service: Service) -> Iterator[tuple]:
    """A client for each of the two tenants' keys (no_job_outlives_its_test's)."""
    from bps_client import Client

    with Client(service.url, service.key) as own, Client(service.url, service.other_key) as other:
        yield own, other


@pytest.fixture(scope="module")
def client(service):  # noqa: ANN001, ANN201
    from bps_client import Client

    with Client(service.url, service.key) as c:
        yield c


@pytest.fixture(scope="module")
def trained(client) -> dict:  # noqa: ANN001
    """A succeeded job on examples/iris.csv (its model serves the prediction tests)."""
    dataset = client.upload(IRIS, name="iris")
    job = client.submit(dataset["id"], SPEC, target="species")
    return client.wait(job["id"], timeout=120)


@pytest.fixture
def bpsc(service, capsys):  # noqa: ANN001, ANN201
    """Runs `bpsc ARGS` in-process: (exit status, stdout lines, stderr)."""
    from bps_client.cli import main

    def run(*args: str) -> tuple[int, list[str], str]:
        try:
            status = main(["--url", service.url, "--api-key", service.key, *args])
        except SystemExit as exit_:  # argparse's usage errors
            status = exit_.code
        out, err = capsys.readouterr()
        return status, out.splitlines(), err
    return run
