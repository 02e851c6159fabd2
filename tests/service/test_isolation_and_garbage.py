"""Tenant isolation on every {id} route (404 exactly like a missing id), auth on every /v1
route, and garbage posted to every route: always a 4xx problem+json, never a 500."""
from __future__ import annotations

import numpy as np
import pytest

from tests.service.helpers import SMALL_SPEC, assert_problem, store_trained_model, upload
from tests.service.test_models import SPEC, separable_csv


@pytest.fixture
def resources(client, auth, settings, published) -> dict[str, str]:  # noqa: ANN001
    raw = separable_csv(40)
    dataset_id = upload(client, auth, raw).get_json()["id"]
    job_id = client.post("/v1/jobs", headers=auth, json={"dataset_id": dataset_id, "target": "label",
                                                         "spec": SMALL_SPEC}).get_json()["id"]
    model_id = store_trained_model(settings, "alice", raw, "csv", target="label", spec={**SPEC, "epochs": 1})
    prediction_id = client.post(f"/v1/models/{model_id}/predictions", headers=auth,
                                json={"instances": [[1.0, "dark"]]}).get_json()["id"]
    return {"dataset": dataset_id, "job": job_id, "model": model_id, "prediction": prediction_id}


ID_ROUTES = [
    ("GET", "/v1/datasets/{dataset}", None),
    ("DELETE", "/v1/datasets/{dataset}", None),
    ("GET", "/v1/jobs/{job}", None),
    ("GET", "/v1/jobs/{job}/epochs", None),
    ("POST", "/v1/jobs/{job}/cancel", None),
    ("GET", "/v1/models/{model}", None),
    ("GET", "/v1/models/{model}/download?format=npz", None),
    ("POST", "/v1/models/{model}/predictions", {"instances": [[1.0, "dark"]]}),
    ("GET", "/v1/predictions/{prediction}", None),
    ("GET", "/v1/predictions/{prediction}/download?format=csv", None),
    ("DELETE", "/v1/predictions/{prediction}", None),
    ("GET", "/v1/jobs/{job}/events", None),
    ("GET", "/v1/jobs/{job}/epochs?since=1&limit=5", None),
    ("GET", "/v1/models/{model}/download?format=onnx", None),
    ("POST", "/v1/models/{model}/evaluations", {"instances": [[1.0, "dark"]], "targets": ["cat"]}),
    ("DELETE", "/v1/models/{model}", None),
]


@pytest.mark.parametrize(("method", "path", "body"), ID_ROUTES, ids=[f"{m} {p}" for m, p, _ in ID_ROUTES])
def test_other_tenants_ids_answer_404_like_missing_ones(client, auth, auth_b, resources, method, path, body) -> None:  # noqa: ANN001
    foreign = client.open(path.format(**resources), method=method, headers=auth_b, json=body)
    missing = client.open(path.format(**{k: "00000000-0000-0000-0000-000000000000" for k in resources}),
                          method=method, headers=auth, json=body)
    assert_problem(foreign, 404)
    assert_problem(missing, 404)
    assert foreign.get_json()["title"] == missing.get_json()["title"]
    owner = client.open(path.format(**resources), method="GET" if method == "DELETE" else method, headers=auth,
                        json=body)
    if "onnx" in path:  # the owner reaches it: this model one-hot encodes a feature, which ONNX export refuses
        assert_problem(owner, 422, "one-hot")
    else:
        assert owner.status_code < 400, owner.get_data(as_text=True)  # the owner still sees it


def test_lists_are_scoped(client, auth, auth_b, resources) -> None:  # noqa: ANN001
    assert client.get("/v1/datasets", headers=auth_b).get_json() == []
    assert client.get("/v1/jobs", headers=auth_b).get_json() == []
    assert len(client.get("/v1/jobs", headers=auth).get_json()) == 2  # the submitted and the trained one


ALL_ROUTES = [
    ("POST", "/v1/datasets"), ("GET", "/v1/datasets"), ("GET", "/v1/datasets/x"), ("DELETE", "/v1/datasets/x"),
    ("POST", "/v1/jobs"), ("GET", "/v1/jobs"), ("GET", "/v1/jobs/x"), ("GET", "/v1/jobs/x/epochs"),
    ("POST", "/v1/jobs/x/cancel"), ("GET", "/v1/models/x"), ("GET", "/v1/models/x/download"),
    ("POST", "/v1/models/x/predictions"), ("GET", "/v1/predictions/x"),
]


@pytest.mark.parametrize(("method", "path"), ALL_ROUTES)
def test_every_v1_route_needs_a_valid_key(client, keys, method, path) -> None:  # noqa: ANN001
    for header in (None, "Bearer", "Bearer wrong", "Basic abc", f"Basic {keys['alice']}"):
        headers = {"Authorization": header} if header else {}
        body = assert_problem(client.open(path, method=method, headers=headers), 401)
        assert body["errors"][0]["loc"] == ["header", "Authorization"]


GARBAGE = [
    (b"\xff\xfe\x00garbage", "application/json"),
    (b"{not json", "application/json"),
    (b"[1, 2, 3]", "application/json"),
    (b'"a string"', "application/json"),
    (b'{"dataset_id": 1e999, "spec": [], "instances": {"a": 1}, "unknown": true}', "application/json"),
    (b'{"instances": [[' + b"9" * 5000 + b"]]}", "application/json"),
    (b"[" * 100_000, "application/json"),
    (b"name=value", "application/x-www-form-urlencoded"),
    (b"\x00\x01\x02", "application/octet-stream"),
    (b"--boundary\r\nbroken", "multipart/form-data; boundary=boundary"),
]


@pytest.mark.parametrize(("method", "path"), ALL_ROUTES + [("GET", "/healthz"), ("GET", "/openapi.json"),
                                                          ("POST", "/v1/nope"), ("PUT", "/v1/jobs")])
def test_garbage_is_a_4xx_problem_never_a_500(client, auth, method, path) -> None:  # noqa: ANN001
    for payload, content_type in GARBAGE:
        response = client.open(path, method=method, data=payload, headers={**auth, "Content-Type": content_type})
        if method == "GET" and path in ("/healthz", "/openapi.json", "/v1/datasets", "/v1/jobs"):
            assert response.status_code == 200, (path, payload[:20])  # GET ignores the body
            continue
        assert 400 <= response.status_code < 500, (path, payload[:20], response.get_data(as_text=True)[:300])
        assert response.mimetype == "application/problem+json"


NUL_PROBES = [  # (method, path, body, the problem's loc)
    ("GET", "/v1/models/a%00b", None, ["path", "model_id"]),
    ("DELETE", "/v1/models/a%00b", None, ["path", "model_id"]),
    ("GET", "/v1/models/a%00b/download?format=onnx", None, ["path", "model_id"]),
    ("POST", "/v1/models/a%00b/evaluations", {"dataset_id": "x"}, ["path", "model_id"]),
    ("POST", "/v1/models/{model}/evaluations", {"dataset_id": "a\x00b"}, ["body", "dataset_id"]),
    ("POST", "/v1/models/{model}/predictions", {"dataset_id": "a\x00b", "async": True}, ["body", "dataset_id"]),
    ("GET", "/v1/jobs/a%00b/events", None, ["path", "job_id"]),
    ("GET", "/v1/jobs/a%00b/epochs?since=1", None, ["path", "job_id"]),
    ("DELETE", "/v1/jobs/a%00b", None, ["path", "job_id"]),
    ("GET", "/v1/predictions?model_id=a%00b", None, ["query", "model_id"]),
    ("GET", "/v1/predictions/a%00b/download", None, ["path", "prediction_id"]),
    ("DELETE", "/v1/predictions/a%00b", None, ["path", "prediction_id"]),
    ("GET", "/v1/datasets/a%00b", None, ["path", "dataset_id"]),
    ("POST", "/v1/jobs", {"dataset_id": "a\x00b", "spec": {"layers": [{"type": "dense"}]}}, ["body", "dataset_id"]),
    ("POST", "/v1/jobs", {"dataset_id": "x", "features": ["ok", "a\x00b"], "spec": {}}, ["body", "features", 1]),
]


def _assert_nul_refused(client, auth, model_id: str) -> None:  # noqa: ANN001
    for method, path, body, loc in NUL_PROBES:
        response = client.open(path.format(model=model_id), method=method, headers=auth, json=body)
        problem = assert_problem(response, 400, "NUL")
        assert problem["errors"][0]["loc"] == loc, (method, path)


def test_a_nul_character_in_an_id_path_query_or_body_is_a_400(client, auth, resources) -> None:  # noqa: ANN001
    _assert_nul_refused(client, auth, resources["model"])


@pytest.mark.postgres
def test_a_nul_character_is_a_400_on_postgresql_not_a_500(postgres_settings) -> None:  # noqa: ANN001
    """PostgreSQL text cannot hold NUL: before the check, each of these queries failed (500)."""
    from bps.db import session_scope
    from bps.tenants import create_api_key
    from service.app import create_app

    with session_scope(postgres_settings.database_url) as session:
        key = create_api_key(session=session, tenant_name="alice")
    _assert_nul_refused(create_app(postgres_settings).test_client(), {"Authorization": f"Bearer {key}"}, "m")


NOT_FINITE = [  # (body text, the problem's loc)
    (b'{"instances": [[1.0, NaN]]}', ["body", "instances", 0, 1]),
    (b'{"instances": [[1.0, "dark"], [-Infinity, "dark"]]}', ["body", "instances", 1, 0]),
    (b'{"instances": [[1e400, "dark"]]}', ["body", "instances", 0, 0]),
    (b'{"instances": [[1' + b"0" * 400 + b', "dark"]]}', ["body", "instances", 0, 0]),
    (b'{"records": [{"x": 1' + b"0" * 400 + b'.5, "colour": "dark"}]}', ["body", "records", 0, "x"]),
]


@pytest.mark.parametrize(("raw", "loc"), NOT_FINITE)
def test_a_number_that_is_not_a_finite_double_is_a_400_naming_it(client, auth, resources, raw, loc) -> None:  # noqa: ANN001
    """NaN and Infinity are not JSON, and 1e400 or 10**400 overflow a double: each was a 500
    (OverflowError) or a job with l2 = Infinity, answered as invalid JSON."""
    for path in (f"/v1/models/{resources['model']}/predictions", f"/v1/models/{resources['model']}/evaluations"):
        body = raw[:-1] + b', "targets": ["cat"]}' if path.endswith("evaluations") else raw
        response = client.post(path, data=body, headers={**auth, "Content-Type": "application/json"})
        assert assert_problem(response, 400, "double")["errors"][0]["loc"] == loc


@pytest.mark.parametrize("value", [b"Infinity", b"1e400", b"1" + b"0" * 400])
def test_a_spec_or_target_beyond_a_double_is_refused(client, auth, resources, value) -> None:  # noqa: ANN001
    job = b'{"dataset_id": "%s", "target": "label", "spec": {"layers": [{"type": "dense"}], "l2": %s}}'
    response = client.post("/v1/jobs", data=job % (resources["dataset"].encode(), value),
                           headers={**auth, "Content-Type": "application/json"})
    assert assert_problem(response, 400, "double")["errors"][0]["loc"] == ["body", "spec", "l2"]
    assert b"Infinity" not in client.get("/v1/jobs", headers=auth).data  # no job kept it


def test_ordinary_bodies_are_not_walked_value_by_value() -> None:
    import json

    from service.http import _may_hold_unusable_values

    rows = np.random.default_rng(0).normal(scale=1e6, size=(200, 50)).tolist()
    assert not _may_hold_unusable_values(json.dumps({"instances": rows, "x": 1.5e-300, "y": 12345678}).encode())
    assert _may_hold_unusable_values(json.dumps({"instances": [[1e300]]}).encode())
