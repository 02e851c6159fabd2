"""Fixtures of the asynchronous prediction tests (tests/service/test_async_predictions.py and
test_prediction_downloads.py): a trained model, a dataset over MAX_PREDICTION_ROWS, the
worker's settings. The publish calls: conftest's `published_predictions`."""
from __future__ import annotations

import csv
import io
from dataclasses import replace

import pytest

from tests.service.helpers import store_trained_model, upload
from tests.service.test_onnx_export import tabular_csv

SPEC = {"layers": [{"type": "dense", "units": 8, "activation": "relu"}, {"type": "dense", "activation": "softmax"}],
        "loss": "cross_entropy", "optimizer": {"type": "adam", "learning_rate": 0.05}, "epochs": 5, "batch_size": 8}
CHUNK_ROWS = 40


@pytest.fixture
def worker_settings(settings):  # noqa: ANN001, ANN201
    return replace(settings, prediction_chunk_rows=CHUNK_ROWS, job_heartbeat_timeout_s=1.0)


@pytest.fixture
def model_id(client, auth, settings) -> str:  # noqa: ANN001
    raw = tabular_csv(60)
    upload(client, auth, raw)
    return store_trained_model(settings, "alice", raw, "csv", target="label", spec=SPEC)


@pytest.fixture
def big_dataset(client, auth) -> tuple[str, list[dict]]:  # noqa: ANN001
    """130 rows: over the limit, and four chunks of 40 (the last one short)."""
    raw = tabular_csv(130)
    records = [{k: float(v) for k, v in row.items() if k != "label"} for row in csv.DictReader(io.StringIO(raw.decode()))]
    return upload(client, auth, raw).get_json()["id"], records


def download_rows(client, auth, prediction_id: str) -> list[dict]:  # noqa: ANN001
    response = client.get(f"/v1/predictions/{prediction_id}/download?format=csv", headers=auth)
    assert response.status_code == 200 and response.mimetype == "text/csv"
    return list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
