"""Downloads of asynchronous predictions (CSV, Parquet): every row exactly as a synchronous
prediction gives it, streamed a stored chunk at a time without holding a connection between
chunks; a chunk gone mid-download breaks the stream."""
from __future__ import annotations

import csv
import io
from datetime import datetime

import pyarrow.parquet as pq
import pytest
from sqlalchemy import delete, select

from bps.db import session_scope
from bps.models import PredictionChunk
from tests.service.helpers import assert_problem, upload
from tests.service.prediction_fixtures import (big_dataset, download_rows, model_id,  # noqa: F401
                                               worker_settings)
from tests.service.test_models import _fresh_cache  # noqa: F401  (autouse: an empty model cache per test)
from tests.service.test_onnx_export import tabular_csv
from worker.prediction_runner import run_prediction


def test_over_the_limit_runs_on_a_worker_and_downloads_equal_synchronous(client, auth, model_id, big_dataset,  # noqa: ANN001
                                                                         published_predictions, worker_settings) -> None:
    dataset_id, records = big_dataset
    response = client.post(f"/v1/models/{model_id}/predictions", headers=auth, json={"dataset_id": dataset_id})
    assert response.status_code == 202, response.get_json()
    body = response.get_json()
    assert body["status"] == "queued" and body["n"] == 130 and body["progress"] == 0.0
    assert published_predictions == [(body["id"], "cpu")]
    assert_problem(client.get(f"/v1/predictions/{body['id']}/download", headers=auth), 409, "queued")

    run_prediction(body["id"], settings=worker_settings, worker_id="test-worker")
    done = client.get(response.headers["Location"], headers=auth).get_json()
    assert done["status"] == "succeeded" and done["progress"] == 1.0 and done["n"] == 130 and done["error"] is None
    with session_scope(worker_settings.database_url) as session:
        sizes = session.execute(select(PredictionChunk.seq, PredictionChunk.n_rows)
                                .where(PredictionChunk.prediction_id == body["id"]).order_by(PredictionChunk.seq)).all()
    assert [tuple(s) for s in sizes] == [(0, 40), (1, 40), (2, 40), (3, 10)]

    rows = download_rows(client, auth, body["id"])
    assert len(rows) == 130 and list(rows[0]) == ["prediction", "probability_high", "probability_low", "probability_mid"]
    sample = list(range(0, 130, 3))[:50]
    sync = client.post(f"/v1/models/{model_id}/predictions", headers=auth,
                       json={"records": [records[i] for i in sample]}).get_json()
    assert sync["status"] == "succeeded"
    for k, i in enumerate(sample):  # row for row, to the last digit (floats written with repr)
        assert rows[i]["prediction"] == sync["predictions"][k]
        assert [float(rows[i][f"probability_{c}"]) for c in ("high", "low", "mid")] == sync["probabilities"][k]

    table = pq.read_table(io.BytesIO(client.get(f"/v1/predictions/{body['id']}/download?format=parquet",
                                                headers=auth).data))
    assert table.num_rows == 130 and table.column("prediction").to_pylist() == [r["prediction"] for r in rows]


def test_async_on_request_and_synchronous_downloads(client, auth, model_id, published_predictions,  # noqa: ANN001
                                                    worker_settings) -> None:
    small = upload(client, auth, tabular_csv(12)).get_json()["id"]
    queued = client.post(f"/v1/models/{model_id}/predictions", headers=auth, json={"dataset_id": small, "async": True})
    assert queued.status_code == 202 and queued.get_json()["status"] == "queued"
    run_prediction(queued.get_json()["id"], settings=worker_settings)
    sync = client.post(f"/v1/models/{model_id}/predictions", headers=auth, json={"dataset_id": small})
    assert sync.status_code == 201 and sync.get_json()["status"] == "succeeded"
    times = [datetime.fromisoformat(sync.get_json()[name]) for name in ("created_at", "started_at", "finished_at")]
    assert times == sorted(times), times  # a succeeded prediction has its times, as an asynchronous one has
    assert download_rows(client, auth, queued.get_json()["id"]) == download_rows(client, auth, sync.get_json()["id"])
    assert_problem(client.post(f"/v1/models/{model_id}/predictions", headers=auth,
                               json={"instances": [[1, 2, 3]], "async": True}), 422, "dataset_id")
    assert_problem(client.get(f"/v1/predictions/{sync.get_json()['id']}/download?format=xlsx", headers=auth), 400,
                   "csv", "parquet")


def test_a_download_holds_no_connection_between_chunks_and_fails_when_one_is_gone(  # noqa: ANN001
        client, auth, model_id, big_dataset, published_predictions, worker_settings) -> None:
    """Four stored chunks: the pool lends no connection while the client reads, the rows come in
    seq order; a chunk deleted mid-download breaks the stream instead of ending it short."""
    from bps.db import engine  # noqa: PLC0415

    body = client.post(f"/v1/models/{model_id}/predictions", headers=auth,
                       json={"dataset_id": big_dataset[0]}).get_json()
    run_prediction(body["id"], settings=worker_settings)
    sync = client.post(f"/v1/models/{model_id}/predictions", headers=auth,
                       json={"records": big_dataset[1][-40:]}).get_json()
    pool = engine(worker_settings.database_url).pool
    blocks, lent = [], []
    for block in client.get(f"/v1/predictions/{body['id']}/download", headers=auth, buffered=False).response:
        blocks.append(block)
        lent.append(pool.checkedout())
    rows = list(csv.DictReader(io.StringIO(b"".join(blocks).decode())))
    assert len(blocks) == 5 and lent == [0] * 5, lent  # the header, then one block per chunk
    assert len(rows) == 130 and [row["prediction"] for row in rows[-40:]] == sync["predictions"]
    stream = iter(client.get(f"/v1/predictions/{body['id']}/download", headers=auth, buffered=False).response)
    next(stream), next(stream)
    with session_scope(worker_settings.database_url) as session:
        session.execute(delete(PredictionChunk).where(PredictionChunk.seq == 2))
    with pytest.raises(LookupError, match="chunk 2 is gone after 80 of its 130 rows"):
        list(stream)
