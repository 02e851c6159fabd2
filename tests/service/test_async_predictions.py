"""Asynchronous predictions in one process: POST answers 202 for a dataset over
MAX_PREDICTION_ROWS (50 here) or with "async": true, rows the model cannot take are refused
before queueing, and the worker's run (called directly) stores the rows in chunks, fails
clearly, is taken over or requeued. Downloads: test_prediction_downloads.py. Real processes
(a SIGKILLed worker) are in tests/faults/test_async_predictions.py."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from sqlalchemy import select, update

from bps.db import session_scope
from bps.models import Prediction, PredictionChunk, utcnow
from tests.service.helpers import assert_problem, npz_bytes, store_trained_model, upload
from tests.service.prediction_fixtures import (SPEC, big_dataset, download_rows, model_id,  # noqa: F401  (fixtures)
                                               worker_settings)
from tests.service.test_models import _fresh_cache  # noqa: F401  (autouse: an empty model cache per test)
from tests.service.test_onnx_export import tabular_csv
from worker.prediction_runner import run_prediction


def _with_gaps(raw: bytes) -> bytes:
    """`raw` with an empty `a` in rows 2 and 5 and an `inf` `b` in row 7."""
    lines = raw.decode().splitlines()
    for row, column, value in ((2, 0, ""), (5, 0, ""), (7, 1, "inf")):
        cells = lines[row + 1].split(",")
        cells[column] = value
        lines[row + 1] = ",".join(cells)
    return ("\n".join(lines) + "\n").encode()


def test_values_the_model_cannot_fill_are_refused_before_queueing(client, auth, model_id, settings,  # noqa: ANN001
                                                                published_predictions, worker_settings) -> None:
    """As a synchronous prediction refuses them (422), not a 202 that the worker then fails."""
    gaps = upload(client, auth, _with_gaps(tabular_csv(12))).get_json()["id"]
    refused = assert_problem(client.post(f"/v1/models/{model_id}/predictions", headers=auth,
                                         json={"dataset_id": gaps, "async": True}), 422, "impute", "'a' 2", "'b' 1")
    assert refused["errors"][0]["loc"] == ["body", "dataset_id"]
    assert_problem(client.post(f"/v1/models/{model_id}/predictions", headers=auth, json={"dataset_id": gaps}), 422,
                   "impute", "'a'")
    assert published_predictions == []
    imputing = store_trained_model(settings, "alice", tabular_csv(60), "csv", target="label", spec=SPEC,
                                   impute="mean")
    queued = client.post(f"/v1/models/{imputing}/predictions", headers=auth, json={"dataset_id": gaps, "async": True})
    assert queued.status_code == 202, queued.get_json()
    run_prediction(queued.get_json()["id"], settings=worker_settings)
    assert len(download_rows(client, auth, queued.get_json()["id"])) == 12


def test_an_npz_x_with_values_the_model_cannot_fill_is_refused_before_queueing(client, auth, settings,  # noqa: ANN001
                                                                               published_predictions) -> None:
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(30, 4)), rng.integers(0, 2, size=30)
    upload(client, auth, npz_bytes(X=X, y=y), "train.npz")
    model = store_trained_model(settings, "alice", npz_bytes(X=X, y=y), "npz", target=None, spec=SPEC)
    X[4, 1] = np.inf
    gaps = upload(client, auth, npz_bytes(X=X, y=y), "gaps.npz").get_json()["id"]
    assert_problem(client.post(f"/v1/models/{model}/predictions", headers=auth,
                               json={"dataset_id": gaps, "async": True}), 422, "'X' 1", "impute")
    assert published_predictions == []


def test_another_tenants_prediction_and_download_are_404(client, auth, auth_b, model_id, big_dataset,  # noqa: ANN001
                                                       published_predictions, worker_settings) -> None:
    body = client.post(f"/v1/models/{model_id}/predictions", headers=auth,
                       json={"dataset_id": big_dataset[0]}).get_json()
    run_prediction(body["id"], settings=worker_settings)
    assert_problem(client.get(f"/v1/predictions/{body['id']}/download", headers=auth_b), 404)
    assert_problem(client.get(f"/v1/predictions/{body['id']}", headers=auth_b), 404)
    for request_body in ({"dataset_id": big_dataset[0]}, {"dataset_id": big_dataset[0], "async": True}):
        # another tenant's model and dataset: the path's model answers first (404, not the dataset's 422)
        assert_problem(client.post(f"/v1/models/{model_id}/predictions", headers=auth_b, json=request_body), 404,
                       f"model {model_id} not found")


def test_a_dataset_deleted_while_queued_fails_clearly_and_its_model_cannot_be(client, auth, model_id,  # noqa: ANN001
                                                                              big_dataset, published_predictions,
                                                                              worker_settings) -> None:
    body = client.post(f"/v1/models/{model_id}/predictions", headers=auth,
                       json={"dataset_id": big_dataset[0]}).get_json()
    assert_problem(client.delete(f"/v1/models/{model_id}", headers=auth), 409, "asynchronous prediction")
    assert client.delete(f"/v1/datasets/{big_dataset[0]}", headers=auth).status_code == 204
    run_prediction(body["id"], settings=worker_settings)
    failed = client.get(f"/v1/predictions/{body['id']}", headers=auth).get_json()
    assert failed["status"] == "failed" and f"dataset {big_dataset[0]} was deleted" in failed["error"]
    assert_problem(client.get(f"/v1/predictions/{body['id']}/download", headers=auth), 409, "failed", "deleted")


def test_a_run_that_stopped_midway_is_taken_over_and_every_row_stored_once(client, auth, model_id, big_dataset,  # noqa: ANN001
                                                                           published_predictions, worker_settings,
                                                                           monkeypatch) -> None:
    import worker.prediction_store as store

    body = client.post(f"/v1/models/{model_id}/predictions", headers=auth,
                       json={"dataset_id": big_dataset[0]}).get_json()
    original, calls = store.record_chunk, []

    def dies_after_two_chunks(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        calls.append(args[2])
        if len(calls) > 2:
            raise SystemExit("worker killed")  # not an Exception: nothing is recorded, as with SIGKILL
        return original(*args, **kwargs)

    monkeypatch.setattr(store, "record_chunk", dies_after_two_chunks)
    with pytest.raises(SystemExit):
        run_prediction(body["id"], settings=worker_settings, worker_id="first")
    monkeypatch.setattr(store, "record_chunk", original)
    with session_scope(worker_settings.database_url) as session:  # its heartbeat went silent long ago
        session.execute(update(Prediction).where(Prediction.id == body["id"]).values(heartbeat_at=utcnow().replace(
            year=2000)))
    # the next worker cuts other chunks: it reads on from row 80, the first one not stored
    run_prediction(body["id"], settings=replace(worker_settings, prediction_chunk_rows=25), worker_id="second")
    row = client.get(f"/v1/predictions/{body['id']}", headers=auth).get_json()
    assert row["status"] == "succeeded" and row["n"] == 130
    with session_scope(worker_settings.database_url) as session:
        prediction = session.get(Prediction, body["id"])
        assert prediction.attempt == 2 and prediction.worker_id == "second"
        sizes = session.execute(select(PredictionChunk.seq, PredictionChunk.n_rows)
                                .where(PredictionChunk.prediction_id == body["id"]).order_by(PredictionChunk.seq)).all()
    assert [tuple(s) for s in sizes] == [(0, 40), (1, 40), (2, 20), (3, 25), (4, 5)]  # CSV: batch 3 of 25 cut at row 80
    rows, records = download_rows(client, auth, body["id"]), big_dataset[1]
    sample = [0, 39, 40, 79, 80, 99, 100, 124, 125, 129]  # each side of both attempts' chunk edges
    sync = client.post(f"/v1/models/{model_id}/predictions", headers=auth,
                       json={"records": [records[i] for i in sample]}).get_json()
    assert len(rows) == 130
    assert [rows[i]["prediction"] for i in sample] == sync["predictions"]
    assert [[float(rows[i][f"probability_{c}"]) for c in ("high", "low", "mid")] for i in sample] == sync["probabilities"]


def test_queued_predictions_count_against_the_tenant_quota(client, auth, model_id, big_dataset,  # noqa: ANN001
                                                           published_predictions, app) -> None:
    app.config["BPS_SETTINGS"] = replace(app.config["BPS_SETTINGS"], max_queued_jobs_per_tenant=2)
    for _ in range(2):
        assert client.post(f"/v1/models/{model_id}/predictions", headers=auth,
                           json={"dataset_id": big_dataset[0]}).status_code == 202
    refused = client.post(f"/v1/models/{model_id}/predictions", headers=auth, json={"dataset_id": big_dataset[0]})
    assert_problem(refused, 429, "2 queued asynchronous predictions", "MAX_QUEUED_JOBS_PER_TENANT")


def test_a_stopping_worker_requeues_the_prediction_for_the_next(client, auth, model_id, big_dataset,  # noqa: ANN001
                                                                published_predictions, worker_settings) -> None:
    from worker.runner import SHUTDOWN

    body = client.post(f"/v1/models/{model_id}/predictions", headers=auth,
                       json={"dataset_id": big_dataset[0]}).get_json()
    SHUTDOWN.set()
    try:
        run_prediction(body["id"], settings=worker_settings, worker_id="stopping")
    finally:
        SHUTDOWN.clear()
    row = client.get(f"/v1/predictions/{body['id']}", headers=auth).get_json()
    assert row["status"] == "queued" and published_predictions == [(body["id"], "cpu"), (body["id"], "cpu")]
    run_prediction(body["id"], settings=worker_settings, worker_id="next")
    assert client.get(f"/v1/predictions/{body['id']}", headers=auth).get_json()["status"] == "succeeded"
    assert len(download_rows(client, auth, body["id"])) == 130


@pytest.mark.parametrize("flag", ["yes", 1, "true"])
def test_async_must_be_a_json_boolean(client, auth, model_id, big_dataset, flag) -> None:  # noqa: ANN001
    response = client.post(f"/v1/models/{model_id}/predictions", headers=auth,
                           json={"dataset_id": big_dataset[0], "async": flag})
    assert_problem(response, 422)
    assert ["body", "async"] in [error["loc"] for error in response.get_json()["errors"]]


def test_a_dataset_prediction_or_evaluation_selects_the_dataset_row_once(client, auth, model_id, big_dataset,  # noqa: ANN001
                                                                          published_predictions, settings) -> None:
    """The route looks the Dataset up once and hands the row down (its column profile can be
    megabytes for a wide dataset): synchronous, over the limit, "async", and an evaluation."""
    from sqlalchemy import event  # noqa: PLC0415

    from bps.db import session_factory  # noqa: PLC0415

    small = upload(client, auth, tabular_csv(12)).get_json()["id"]
    engine = session_factory(settings.database_url).kw["bind"]
    statements: list[str] = []

    def record(_connection, _cursor, statement, *_args) -> None:  # noqa: ANN001
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        for path, body, status in (("predictions", {"dataset_id": small}, 201),
                                   ("predictions", {"dataset_id": big_dataset[0]}, 202),
                                   ("predictions", {"dataset_id": small, "async": True}, 202),
                                   ("evaluations", {"dataset_id": small}, 200)):
            statements.clear()
            response = client.post(f"/v1/models/{model_id}/{path}", headers=auth, json=body)
            assert response.status_code == status, response.get_json()
            assert sum("FROM datasets" in statement for statement in statements) == 1, (path, body)
    finally:
        event.remove(engine, "before_cursor_execute", record)
