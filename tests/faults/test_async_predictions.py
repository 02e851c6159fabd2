"""Asynchronous predictions with real processes: `bps api` and `bps worker` on PostgreSQL and
Redis. A worker SIGKILLed mid-prediction is taken over and the result holds every row exactly
once, equal to synchronous predictions row for row; another tenant's download is 404; a
dataset deleted while its prediction is queued fails it with a sentence saying so."""
from __future__ import annotations

import csv
import io
import os
import signal
import subprocess
import urllib.request
import uuid

import pytest
from sqlalchemy import func, select

from bps.db import session_scope
from bps.models import Prediction, PredictionChunk
from bps.tenants import create_api_key
from tests.e2e.flow import Client, blobs, csv_bytes, free_port, train_and_predict, wait_healthy
from tests.faults.harness import bps_command, stop_processes, wait_for
from tests.faults.test_worker_death import worker_pid

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]
ROWS = 1500
SYNC_LIMIT = 100
ONE_ROW_CHUNKS = {"PREDICTION_CHUNK_ROWS": "1"}  # one fenced transaction per row: slow enough to kill midway


@pytest.fixture
def api(fault_settings, tmp_path):  # noqa: ANN001, ANN201
    """A `bps api` process; yields (base_url, {tenant: key}) for two fresh tenants."""
    with session_scope(fault_settings.database_url) as session:
        keys = {name: create_api_key(session=session, tenant_name=f"{name}-{uuid.uuid4().hex[:8]}")
                for name in ("alice", "bob")}
    env = {**os.environ, "DATABASE_URL": fault_settings.database_url, "BROKER_URL": fault_settings.broker_url,
           "HOST": "127.0.0.1", "PORT": str(free_port()), "WEB_CONCURRENCY": "1", "LOG_LEVEL": "WARNING",
           "MAX_PREDICTION_ROWS": str(SYNC_LIMIT), "BPS_VAR_DIR": str(tmp_path / "api-var")}
    with open(tmp_path / "api.log", "wb") as log:
        process = subprocess.Popen(bps_command("api"), env=env, stdout=log, stderr=subprocess.STDOUT)
    base_url = f"http://127.0.0.1:{env['PORT']}"
    try:
        wait_healthy(Client(base_url), alive=lambda: process.poll() is None)
        yield base_url, keys
    finally:
        stop_processes([process], grace_s=30)


def download(base_url: str, key: str, prediction_id: str) -> tuple[int, list[dict]]:
    request = urllib.request.Request(f"{base_url}/v1/predictions/{prediction_id}/download?format=csv",
                                     headers={"Authorization": f"Bearer {key}"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, list(csv.DictReader(io.StringIO(response.read().decode())))
    except urllib.error.HTTPError as error:
        return error.code, []


def wait_finished(client: Client, prediction_id: str, timeout: float) -> dict:
    def finished() -> dict | None:
        status, body = client.json("GET", f"/v1/predictions/{prediction_id}")
        assert status == 200, body
        return body if body["status"] in ("succeeded", "failed") else None

    return wait_for(finished, timeout, f"prediction {prediction_id} to finish")


def prediction_row(settings, prediction_id: str) -> Prediction:  # noqa: ANN001
    with session_scope(settings.database_url) as session:
        return session.get(Prediction, prediction_id)


def assert_equal_to_synchronous(client: Client, model_id: str, rows: list, downloaded: list[dict]) -> None:
    """A sample of SYNC_LIMIT downloaded rows equals a synchronous prediction of the same rows."""
    sample = list(range(0, ROWS, ROWS // SYNC_LIMIT))[:SYNC_LIMIT]
    records = [{name: float(f"{rows[i][j]:.4f}") for j, name in enumerate("abc")} for i in sample]  # as in the CSV
    status, sync = client.json("POST", f"/v1/models/{model_id}/predictions", {"records": records})
    assert status == 201, sync
    labels = sorted({label for *_, label in rows})
    for k, i in enumerate(sample):
        assert downloaded[i]["prediction"] == sync["predictions"][k]
        # float32 sums may round differently in a 1-row and a 100-row product: equal to float32 precision
        assert [float(downloaded[i][f"probability_{label}"]) for label in labels] == pytest.approx(
            sync["probabilities"][k], rel=1e-5, abs=1e-6)


def test_a_sigkilled_worker_is_taken_over_and_every_row_is_stored_once(fault_settings, workers, api):  # noqa: ANN001
    base_url, keys = api
    client = Client(base_url, keys["alice"])
    first, second = workers.start(**ONE_ROW_CHUNKS), workers.start(**ONE_ROW_CHUNKS)
    model_id = train_and_predict(client)["model_id"]
    rows = blobs(ROWS // 3, seed=4)
    status, dataset = client.upload("many.csv", csv_bytes(rows))
    assert status == 201, dataset
    status, queued = client.json("POST", f"/v1/models/{model_id}/predictions", {"dataset_id": dataset["id"]})
    assert status == 202 and queued["status"] == "queued" and queued["n"] == ROWS, queued

    wait_for(lambda: (prediction_row(fault_settings, queued["id"]).rows_done or 0) >= 100, 60, "100 rows stored")
    owner = prediction_row(fault_settings, queued["id"]).worker_id
    victim = first if worker_pid(owner) == first.pid else second
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait(timeout=10)
    rows_when_killed = prediction_row(fault_settings, queued["id"]).rows_done

    done = wait_finished(client, queued["id"], timeout=120)
    assert done["status"] == "succeeded" and done["n"] == ROWS and done["progress"] == 1.0, (done, workers.logs())
    row = prediction_row(fault_settings, queued["id"])
    assert row.attempt == 2 and row.worker_id != owner and 100 <= rows_when_killed < ROWS
    with session_scope(fault_settings.database_url) as session:
        seqs = list(session.scalars(select(PredictionChunk.seq).where(PredictionChunk.prediction_id == row.id)
                                    .order_by(PredictionChunk.seq)))
        stored = session.scalar(select(func.sum(PredictionChunk.n_rows)).where(PredictionChunk.prediction_id == row.id))
    assert seqs == list(range(ROWS)) and stored == ROWS

    status, downloaded = download(base_url, keys["alice"], queued["id"])
    assert status == 200 and len(downloaded) == ROWS
    assert_equal_to_synchronous(client, model_id, rows, downloaded)
    assert download(base_url, keys["bob"], queued["id"]) == (404, [])
    print(f"\nSIGKILL mid-prediction: killed after {rows_when_killed}/{ROWS} rows; attempt 2 stored the rest; "
          f"{len(seqs)} chunks, none twice")


def test_a_dataset_deleted_while_queued_fails_the_prediction_clearly(fault_settings, workers, api):  # noqa: ANN001
    base_url, keys = api
    client = Client(base_url, keys["alice"])
    workers.start()
    model_id = train_and_predict(client)["model_id"]
    workers.stop_all()  # nothing runs it while it is queued
    status, dataset = client.upload("queued.csv", csv_bytes(blobs(50, seed=5)))
    assert status == 201
    status, queued = client.json("POST", f"/v1/models/{model_id}/predictions",
                                 {"dataset_id": dataset["id"], "async": True})
    assert status == 202, queued
    assert client.request("DELETE", f"/v1/datasets/{dataset['id']}")[0] == 204
    workers.start()
    failed = wait_finished(client, queued["id"], timeout=60)
    assert failed["status"] == "failed" and f"dataset {dataset['id']} was deleted" in failed["error"], failed
    assert download(base_url, keys["alice"], queued["id"])[0] == 409
