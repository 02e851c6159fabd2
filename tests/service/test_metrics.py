"""GET /metrics (CONTRACT §8) parsed with prometheus_client's own parser after a real job and
predictions: every family is there, the counts match what happened, nothing names a tenant;
X-Request-ID; METRICS_ENABLED=0."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bps.db import session_scope
from bps.models import Tenant, WorkerRecord
from tests.service.helpers import upload

EPOCHS = 4


def scrape(client) -> dict:  # noqa: ANN001
    response = client.get("/metrics")
    assert response.status_code == 200 and response.mimetype == "text/plain"
    return {family.name: family for family in text_string_to_metric_families(response.get_data(as_text=True))}


def samples(family, name: str | None = None) -> dict[tuple, float]:  # noqa: ANN001
    return {tuple(sorted(s.labels.items())): s.value for s in family.samples if name in (None, s.name)}


@pytest.fixture
def trained(client, auth, settings, published) -> dict:  # noqa: ANN001
    """One job trained by the worker's runner, one 3-row and one 2-row prediction with its model."""
    from worker.runner import run_job

    x = np.random.default_rng(0).normal(size=(120, 2))
    rows = "".join(f"{a:.3f},{b:.3f},{'hi' if a + b > 0 else 'lo'}\n" for a, b in x)
    dataset_id = upload(client, auth, ("a,b,label\n" + rows).encode()).get_json()["id"]
    spec = {"layers": [{"type": "dense", "units": 4, "activation": "relu"}, {"type": "dense", "activation": "softmax"}],
            "loss": "cross_entropy", "epochs": EPOCHS}
    job_id = client.post("/v1/jobs", json={"dataset_id": dataset_id, "target": "label", "spec": spec},
                         headers=auth).get_json()["id"]
    run_job(job_id, settings=settings)
    model_id = client.get(f"/v1/jobs/{job_id}", headers=auth).get_json()["model_id"]
    for instances in ([[1, 1], [-1, -1], [0, 2]], [[3, 3], [-3, -3]]):
        response = client.post(f"/v1/models/{model_id}/predictions", json={"instances": instances}, headers=auth)
        assert response.status_code == 201
    with session_scope(settings.database_url) as session:
        session.add(WorkerRecord(id="bps-cpu-1@host", device="cpu", queues=["cpu"]))
    return {"job_id": job_id, "model_id": model_id}


def test_metrics_after_a_job_and_predictions(client, auth, trained, settings, monkeypatch) -> None:  # noqa: ANN001
    import worker.registry

    monkeypatch.setattr(worker.registry, "broker_queue_sizes", lambda _settings: {"cpu": 2, "gpu": 0})
    client.get(f"/v1/jobs/{trained['job_id']}", headers=auth)
    families = scrape(client)

    assert samples(families["bps_jobs"])[(("status", "succeeded"),)] == 1
    assert samples(families["bps_jobs"])[(("status", "queued"),)] == 0
    assert samples(families["bps_queue_depth"]) == {(("queue", "cpu"),): 2, (("queue", "gpu"),): 0}
    assert samples(families["bps_workers"]) == {(("device", "cpu"),): 1, (("device", "gpu"),): 0}
    assert samples(families["bps_prediction_rows"], "bps_prediction_rows_total") == {(): 5}

    epochs = families["bps_epoch_duration_seconds"]
    assert epochs.type == "histogram"
    assert samples(epochs, "bps_epoch_duration_seconds_count") == {(): EPOCHS}
    assert samples(epochs, "bps_epoch_duration_seconds_bucket")[(("le", "+Inf"),)] == EPOCHS
    assert samples(epochs, "bps_epoch_duration_seconds_sum")[()] > 0

    http = families["bps_http_request_duration_seconds"]
    counts = samples(http, "bps_http_request_duration_seconds_count")
    job_route = (("method", "GET"), ("route", "/v1/jobs/<job_id>"), ("status", "200"))
    assert counts[job_route] == 2  # the fixture's read and this test's
    assert counts[(("method", "POST"), ("route", "/v1/models/<model_id>/predictions"), ("status", "201"))] == 2


def test_metrics_name_no_tenant_and_no_id(client, trained, settings) -> None:  # noqa: ANN001
    client.get("/v1/jobs/no-such-job")  # 401: still labelled by the rule, not the path
    client.get("/nowhere/at/all")
    text = client.get("/metrics").get_data(as_text=True)
    with session_scope(settings.database_url) as session:
        tenants = [(t.id, t.name) for t in session.query(Tenant)]
    needles = [trained["job_id"], trained["model_id"], "no-such-job", "/nowhere"] + [v for t in tenants for v in t]
    assert not [needle for needle in needles if needle in text]
    assert 'route="<unmatched>"' in text


def test_metrics_need_no_key_and_can_be_turned_off(settings) -> None:  # noqa: ANN001
    from service.app import create_app

    assert create_app(settings).test_client().get("/metrics").status_code == 200
    response = create_app(replace(settings, metrics_enabled=False)).test_client().get("/metrics")
    assert response.status_code == 404 and response.mimetype == "application/problem+json"


def test_request_id_is_taken_or_made_and_returned(client) -> None:  # noqa: ANN001
    assert client.get("/healthz", headers={"X-Request-ID": "abc-123"}).headers["X-Request-ID"] == "abc-123"
    made = {client.get("/healthz").headers["X-Request-ID"] for _ in range(2)}
    assert len(made) == 2 and all(len(rid) == 32 for rid in made)
    unsafe = client.get("/healthz", headers={"X-Request-ID": "a b\tc"}).headers["X-Request-ID"]
    assert unsafe != "a b\tc" and len(unsafe) == 32


def test_an_unknown_method_is_labelled_other(client) -> None:  # noqa: ANN001
    client.open("/healthz", method="BREW")
    client.open("/healthz", method="PROPFIND-XYZ")
    family = scrape(client)["bps_http_request_duration_seconds"]
    methods = {sample.labels["method"] for sample in family.samples if "method" in sample.labels}
    assert "other" in methods and not methods & {"BREW", "PROPFIND-XYZ"}
