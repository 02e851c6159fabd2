"""POST/GET/DELETE /v1/datasets: formats, profiles, every bad-file path, size limit, 409."""
from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest

from bps.db import session_scope
from bps.models import DatasetChunk, Job
from tests.service.helpers import IRIS_LIKE_CSV, assert_problem, npz_bytes, upload


def test_csv_upload_profiles_every_column(client, auth) -> None:  # noqa: ANN001
    raw = b"x,label,w\n1,a,2.5\n3,b,inf\n5,a,\n"
    response = upload(client, auth, raw, name="tiny")
    assert response.status_code == 201
    body = response.get_json()
    assert response.headers["Location"] == f"/v1/datasets/{body['id']}"
    assert (body["name"], body["format"], body["n_rows"], body["size_bytes"]) == ("tiny", "csv", 3, len(raw))
    columns = {c["name"]: c for c in body["columns"]}
    assert columns["x"]["min"] == 1 and columns["x"]["max"] == 5 and columns["x"]["mean"] == 3
    assert columns["x"]["std"] == pytest.approx(np.std([1, 3, 5]))
    assert columns["label"]["dtype"] == "string" and columns["label"]["n_unique"] == 2
    assert columns["label"]["min"] is None and columns["label"]["std"] is None
    assert columns["w"]["missing"] == 1 and columns["w"]["non_finite"] == 2 and columns["w"]["max"] == 2.5
    assert body["created_at"].endswith(("Z", "+00:00"))


def test_parquet_and_npz_uploads(client, auth) -> None:  # noqa: ANN001
    buffer = io.BytesIO()
    pd.DataFrame({"a": [1.0, 2.0], "b": ["u", "v"]}).to_parquet(buffer)
    parquet = upload(client, auth, buffer.getvalue(), "t.parquet").get_json()
    assert parquet["format"] == "parquet" and [c["name"] for c in parquet["columns"]] == ["a", "b"]
    raw = npz_bytes(X=np.arange(24, dtype=np.float32).reshape(6, 1, 2, 2), y=np.array([0, 1, 2, 0, 1, 2]))
    npz = upload(client, auth, raw, "d.npz").get_json()
    assert npz["format"] == "npz" and npz["shapes"] == {"X": [6, 1, 2, 2], "y": [6]} and npz["n_rows"] == 6


def test_bytes_are_stored_in_chunks(client, auth, settings, app) -> None:  # noqa: ANN001
    app.config["BPS_SETTINGS"] = type(settings)(**{**app.config["BPS_SETTINGS"].__dict__, "dataset_chunk_bytes": 100})
    dataset_id = upload(client, auth, IRIS_LIKE_CSV).get_json()["id"]
    from bps.datasets import load_dataset_bytes

    with session_scope(settings.database_url) as session:
        n_chunks = session.query(DatasetChunk).filter_by(dataset_id=dataset_id).count()
        assert load_dataset_bytes(session=session, dataset_id=dataset_id) == IRIS_LIKE_CSV
    assert n_chunks == -(-len(IRIS_LIKE_CSV) // 100)


BAD_FILES = [
    ("empty", b"", "data.csv", 422, ["empty"]),
    ("header only", b"a,b,c\n", "data.csv", 422, ["no data rows"]),
    ("ragged", b"a,b\n1,2\n3,4,5\n", "data.csv", 422, ["line 3", "3 fields"]),
    ("short row", b"a,b\n1,2\n3\n", "data.csv", 422, ["line 3"]),
    ("binary junk", bytes(range(256)) * 4, "data.csv", 422, ["binary"]),
    ("not utf-8", b"a,b\n1,caf\xe9\n", "data.csv", 422, ["utf-8", "line 2"]),
    ("bad parquet", b"PAR1 not really", "d.parquet", 422, ["parquet"]),
    ("bad zip", b"PK\x03\x04garbage", "d.npz", 422, ["npz"]),
    ("object array", None, "d.npz", 422, ["objects", "x"]),
    ("length mismatch", npz_bytes(X=np.zeros((4, 2)), y=np.zeros(3)), "d.npz", 422, ["4 rows", "3"]),
    ("no y", npz_bytes(X=np.zeros((4, 2))), "d.npz", 422, ["'y'"]),
    ("1-d X", npz_bytes(X=np.zeros(4), y=np.zeros(4)), "d.npz", 422, ["shape"]),
]


def _object_npz() -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, X=np.array([[1, "a"]], dtype=object), y=np.zeros(1))
    return buffer.getvalue()


@pytest.mark.parametrize(("case", "raw", "filename", "status", "needles"), BAD_FILES, ids=[c[0] for c in BAD_FILES])
def test_bad_files_are_refused_naming_the_problem(client, auth, case, raw, filename, status, needles) -> None:  # noqa: ANN001
    raw = _object_npz() if raw is None else raw
    assert_problem(upload(client, auth, raw, filename), status, *needles)


def test_upload_over_the_limit_is_413(client, auth) -> None:  # noqa: ANN001
    raw = b"a,b\n" + b"1,2\n" * 100_000  # 400 kB > the 256 kB test limit
    assert_problem(upload(client, auth, raw), 413, "limit")


def test_upload_needs_multipart_and_a_file(client, auth) -> None:  # noqa: ANN001
    assert_problem(client.post("/v1/datasets", json={"file": "x"}, headers=auth), 415, "multipart")
    response = client.post("/v1/datasets", data={"name": "x"}, headers=auth, content_type="multipart/form-data")
    assert_problem(response, 400, "file")


def test_list_get_delete(client, auth) -> None:  # noqa: ANN001
    first = upload(client, auth, IRIS_LIKE_CSV, name="one").get_json()
    second = upload(client, auth, IRIS_LIKE_CSV, name="two").get_json()
    listed = client.get("/v1/datasets", headers=auth).get_json()
    assert {d["id"] for d in listed} == {first["id"], second["id"]}
    assert client.get(f"/v1/datasets/{first['id']}", headers=auth).get_json() == first
    assert client.delete(f"/v1/datasets/{first['id']}", headers=auth).status_code == 204
    assert_problem(client.get(f"/v1/datasets/{first['id']}", headers=auth), 404, "not found")
    assert_problem(client.delete(f"/v1/datasets/{first['id']}", headers=auth), 404)
    assert_problem(client.get("/v1/datasets?limit=0", headers=auth), 400, "limit")


@pytest.mark.parametrize(("status", "expected"), [("queued", 409), ("running", 409), ("succeeded", 204)])
def test_delete_refused_while_a_job_needs_it(client, auth, settings, status, expected) -> None:  # noqa: ANN001
    dataset = upload(client, auth, IRIS_LIKE_CSV).get_json()
    from bps.models import Dataset

    with session_scope(settings.database_url) as session:
        tenant_id = session.get(Dataset, dataset["id"]).tenant_id
        session.add(Job(tenant_id=tenant_id, dataset_id=dataset["id"], status=status, spec={}))
    response = client.delete(f"/v1/datasets/{dataset['id']}", headers=auth)
    if expected == 409:
        assert_problem(response, 409, "queued or running")
    else:
        assert response.status_code == 204


def test_semicolon_csv_is_split_into_columns(client, auth) -> None:  # noqa: ANN001
    raw = IRIS_LIKE_CSV.decode().replace(",", ";").encode()
    response = upload(client, auth, raw, "iris-semicolons.csv")
    assert response.status_code == 201, response.get_data(as_text=True)
    expected = IRIS_LIKE_CSV.decode().splitlines()[0].split(",")
    assert [c["name"] for c in response.get_json()["columns"]] == expected


def test_csv_without_a_header_row_is_refused_saying_so(client, auth) -> None:  # noqa: ANN001
    headerless = b"".join(IRIS_LIKE_CSV.splitlines(keepends=True)[1:])
    body = assert_problem(upload(client, auth, headerless, "no-header.csv"), 422, "not a header", "header row")
    assert body["errors"][0]["loc"] == ["file", "line 1"]


def test_parquet_timestamp_column_is_profiled_as_seconds(client, auth) -> None:  # noqa: ANN001
    frame = pd.DataFrame({"at": pd.to_datetime(["2024-01-01T00:00:00Z", "2024-01-02T00:00:00Z"]), "y": [0, 1]})
    buffer = io.BytesIO()
    frame.to_parquet(buffer)
    response = upload(client, auth, buffer.getvalue(), "times.parquet")
    assert response.status_code == 201, response.get_data(as_text=True)
    at = response.get_json()["columns"][0]
    assert (at["dtype"], at["min"], at["max"]) == ("float64", 1704067200.0, 1704153600.0)
