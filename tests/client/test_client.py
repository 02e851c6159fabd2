"""bps_client.Client against real `bps api` + `bps worker` processes: every call, the progress
bar, JobFailed, ApiError with the 422 problem, chunked predictions, stream and polling waits."""
from __future__ import annotations

import json
import time

import httpx
import numpy as np
import pandas as pd
import pytest

from bps_client import ApiError, Client, JobFailed
from tests.client.conftest import IRIS, MAX_PREDICTION_ROWS, SPEC, mock_client

pytestmark = pytest.mark.slow


def test_upload_takes_a_path_a_dataframe_and_arrays(client):
    frame = pd.read_csv(IRIS)
    from_path = client.upload(IRIS)
    from_frame = client.upload(frame, name="iris frame")
    rng = np.random.default_rng(0)
    from_arrays = client.upload(X=rng.standard_normal((20, 4)), y=rng.integers(0, 2, 20))
    assert from_path["n_rows"] == from_frame["n_rows"] == len(frame) == 150
    assert from_frame["name"] == "iris frame"
    assert [c["name"] for c in from_frame["columns"]] == list(frame.columns)
    assert from_arrays["format"] == "npz" and from_arrays["shapes"]["X"] == [20, 4]
    listed = {d["id"] for d in client.datasets()}
    assert {from_path["id"], from_frame["id"], from_arrays["id"]} <= listed
    assert client.dataset(from_path["id"])["id"] == from_path["id"]
    client.delete_dataset(from_arrays["id"])
    with pytest.raises(ApiError) as missing:
        client.dataset(from_arrays["id"])
    assert missing.value.status == 404


def test_submit_wait_epochs_and_the_job_lists(client, trained):
    assert trained["status"] == "succeeded" and trained["model_id"]
    epochs = client.epochs(trained["id"])
    assert [e["epoch"] for e in epochs] == list(range(1, SPEC["epochs"] + 1))
    assert client.epochs(trained["id"], since=4) == epochs[4:]
    frame = client.epochs(trained["id"], as_frame=True)
    assert list(frame.index) == [e["epoch"] for e in epochs]
    assert frame["loss"].tolist() == [e["loss"] for e in epochs]
    assert any(c.startswith("grad_norm/") for c in frame.columns)
    assert client.job(trained["id"])["model_id"] == trained["model_id"]
    assert trained["id"] in {j["id"] for j in client.jobs(status="succeeded")}
    assert trained["id"] not in {j["id"] for j in client.jobs(status="failed")}
    model = client.model(trained["model_id"])
    assert model["classes"] == ["setosa", "versicolor", "virginica"]
    with pytest.raises(ApiError) as finished:
        client.cancel(trained["id"])
    assert finished.value.status == 409


def test_models_lists_the_trained_model(client, trained):
    assert trained["model_id"] in {m["id"] for m in client.models()}


def test_cancel_a_queued_or_running_job_and_wait_raises_jobfailed(client, trained):
    job = client.submit(trained["dataset_id"], {**SPEC, "epochs": 3000}, target="species")
    cancelled = client.cancel(job["id"])
    assert cancelled["status"] in ("cancelled", "running")
    with pytest.raises(JobFailed) as failed:
        client.wait(job["id"], timeout=60)
    assert failed.value.status == "cancelled" and failed.value.job["id"] == job["id"]


def test_progress_bar_shows_every_epoch(client, trained, capfd):
    job = client.submit(trained["dataset_id"], {**SPEC, "epochs": 8}, target="species")
    final = client.wait(job["id"], progress=True, timeout=120)
    err = capfd.readouterr().err
    assert final["status"] == "succeeded"
    for n in range(1, 9):
        assert f"epoch {n}/8" in err, err[-2000:]
    assert "loss=" in err and "val_loss=" in err and "accuracy=" in err
    assert "<" in err  # elapsed<remaining


def no_stream(*_args, **_kwargs):  # noqa: ANN002, ANN003
    """Client.events where the API answers 503 (more than MAX_EVENT_STREAMS streams)."""
    raise ApiError(503, {"title": "Service Unavailable", "detail": "too many streams"})


def test_wait_polls_when_the_event_stream_is_unavailable(client, trained, capfd, monkeypatch):
    monkeypatch.setattr(client, "events", no_stream)
    job = client.submit(trained["dataset_id"], {**SPEC, "epochs": 4}, target="species")
    final = client.wait(job["id"], progress=True, timeout=120, poll_interval=0.05)
    err = capfd.readouterr().err
    assert final["status"] == "succeeded"
    assert "epoch 4/4" in err


def test_wait_gives_up_at_its_timeout_on_the_stream_and_when_polling(client, trained, monkeypatch):
    job = client.submit(trained["dataset_id"], {**SPEC, "epochs": 5000}, target="species")
    for label in ("stream", "polling"):
        start = time.monotonic()
        with pytest.raises(TimeoutError):
            client.wait(job["id"], timeout=1.5, poll_interval=0.1)
        assert time.monotonic() - start < 10, label
        monkeypatch.setattr(client, "events", no_stream)


def test_a_diverging_job_raises_jobfailed_with_its_error(client, trained):
    spec = {**SPEC, "optimizer": {"type": "sgd", "learning_rate": 1e12}, "epochs": 20}
    job = client.submit(trained["dataset_id"], spec, target="species")
    with pytest.raises(JobFailed) as failed:
        client.wait(job["id"], timeout=120)
    assert failed.value.status == "failed"
    assert "NaN" in failed.value.error and "learning rate" in failed.value.error


def test_a_bad_spec_raises_apierror_with_the_422_problem(client, trained):
    spec = {**SPEC, "layers": [{"type": "dense", "units": -3}, {"type": "sparkle"}]}
    with pytest.raises(ApiError) as error:
        client.submit(trained["dataset_id"], spec, target="species")
    assert error.value.status == 422
    assert error.value.problem["status"] == 422
    locs = [e["loc"] for e in error.value.errors]
    assert any("units" in map(str, loc) for loc in locs) and any(1 in loc or "1" in loc for loc in locs), locs
    assert str(error.value).startswith(error.value.problem["title"] + ": ")
    assert error.value.problem["detail"] in str(error.value)


def test_predict_takes_lists_dicts_frames_and_arrays(client, trained):
    frame = pd.read_csv(IRIS).drop(columns="species").iloc[:5]
    model_id = trained["model_id"]
    by_frame = client.predict(model_id, frame)
    by_records = client.predict(model_id, frame.to_dict("records"))
    by_lists = client.predict(model_id, frame.to_numpy().tolist())
    by_array = client.predict(model_id, frame.to_numpy())
    assert by_frame["n"] == 5
    for other in (by_records, by_lists, by_array):
        assert other["predictions"] == by_frame["predictions"]
        np.testing.assert_allclose(other["probabilities"], by_frame["probabilities"])
    assert set(by_frame["predictions"]) <= {"setosa", "versicolor", "virginica"}
    with pytest.raises(ApiError) as missing:  # NaN goes out as null (JSON has no NaN): the server names it
        client.predict(model_id, np.array([[np.nan, 3.0, 1.4, 0.2]]))
    assert missing.value.status == 422 and "missing" in str(missing.value)


def test_predict_chunks_splits_rows_beyond_max_prediction_rows(client, trained):
    frame = pd.read_csv(IRIS).drop(columns="species").iloc[:30]
    with pytest.raises(ApiError) as too_many:
        client.predict(trained["model_id"], frame)
    assert too_many.value.status == 413
    pieces = list(client.predict_chunks(trained["model_id"], [frame]))
    assert [p["n"] for p in pieces] == [7, 7, 7, 7, 2]
    assert all(p["n"] <= MAX_PREDICTION_ROWS for p in pieces)
    joined = [label for p in pieces for label in p["predictions"]]
    assert joined == client.predict(trained["model_id"], frame.iloc[:7])["predictions"] + joined[7:]
    assert joined[21:28] == client.predict(trained["model_id"], frame.iloc[21:28])["predictions"]


def row_limited_client(limit: int, *, names_it: bool) -> tuple[Client, list[int]]:
    """A scripted API that predicts at most `limit` rows, its 413 giving `max_rows` or only a
    sentence; the sizes of the requests it got."""
    sizes: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        n = len(json.loads(request.content)["instances"])
        sizes.append(n)
        if n > limit:
            problem = {"title": "Payload Too Large", "status": 413, "detail": f"{n} rows is more than the {limit}"}
            return httpx.Response(413, json={**problem, **({"max_rows": limit} if names_it else {})})
        return httpx.Response(201, json={"n": n, "predictions": [0] * n})

    return mock_client(handler, retries=0), sizes


def test_predict_chunks_shrinks_its_pieces_to_the_413s_max_rows():
    client, sizes = row_limited_client(3, names_it=True)
    pieces = list(client.predict_chunks("m", [[[1.0]] * 10], chunk_rows=8))
    assert [p["n"] for p in pieces] == [3, 3, 3, 1] and sizes == [8, 3, 3, 3, 1]


def test_predict_chunks_halves_its_pieces_on_a_413_without_max_rows():
    client, sizes = row_limited_client(3, names_it=False)
    pieces = list(client.predict_chunks("m", [[[1.0]] * 10], chunk_rows=8))
    assert [p["n"] for p in pieces] == [2, 2, 2, 2, 2] and sizes[:3] == [8, 4, 2]


def test_evaluate_sends_named_columns_in_the_models_feature_order():
    """evaluate's instances are positional (the endpoint takes no records, and the Evaluation
    does not name the features): a DataFrame or dicts with the columns in another order must not
    score feature `b` as feature `a`. Only named rows cost the GET of the model's features."""
    bodies: list[dict] = []
    requests: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        requests.append(f"{request.method} {request.url.path}")
        if request.method == "GET":
            return httpx.Response(200, json={"id": "m", "features": ["a", "b"]})
        bodies.append(json.loads(request.content))
        return httpx.Response(200, json={"n": len(bodies[-1].get("instances", []))})

    client = mock_client(handler, retries=0)
    client.evaluate("m", instances=pd.DataFrame({"b": [2.0, 4.0], "a": [1.0, 3.0]}), targets=["x", "y"])
    client.evaluate("m", instances=[{"b": 2.0, "a": 1.0, "extra": 9}], targets=["x"])
    assert requests == ["GET /v1/models/m", "POST /v1/models/m/evaluations"] * 2
    requests.clear()
    client.evaluate("m", instances=[[1.0, 2.0]], targets=["x"])  # lists: already in feature order
    client.evaluate("m", instances=np.array([[1.0, 2.0]]), targets=["x"])
    client.evaluate("m", dataset_id="d")
    assert requests == ["POST /v1/models/m/evaluations"] * 3
    assert [body.get("instances") for body in bodies] == [[[1.0, 2.0], [3.0, 4.0]], [[1.0, 2.0]], [[1.0, 2.0]],
                                                          [[1.0, 2.0]], None]
    assert bodies[-1] == {"dataset_id": "d"}
    with pytest.raises(ValueError, match=r"\['a'\]"):
        client.evaluate("m", instances=pd.DataFrame({"b": [2.0]}), targets=["x"])


def test_download_npz_and_apierror_for_an_unknown_format(client, trained, tmp_path):
    path = client.download(trained["model_id"], tmp_path / "m.npz")
    with np.load(path, allow_pickle=False) as saved:
        assert "0.weight" in saved.files and "preprocessing" in saved.files
    with pytest.raises(ApiError) as error:
        client.download(trained["model_id"], tmp_path / "m.bin", format="pickle")
    assert error.value.status == 400 and not (tmp_path / "m.bin").exists()


def test_another_tenants_ids_are_404(service, trained):
    with Client(service.url, service.other_key) as other:
        for call in (lambda: other.job(trained["id"]), lambda: other.model(trained["model_id"]),
                     lambda: list(other.events(trained["id"]))):
            with pytest.raises(ApiError) as error:
                call()
            assert error.value.status == 404


def test_retries_on_429_and_503_honouring_retry_after():
    answers = [httpx.Response(503, headers={"Retry-After": "0"}, json={"title": "Service Unavailable"}),
               httpx.Response(429, headers={"Retry-After": "0"}, json={"title": "Too Many Requests"}),
               httpx.Response(200, json={"id": "j", "status": "queued"})]
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        return answers[len(seen) - 1]

    with mock_client(handler) as c:
        assert c.job("j") == {"id": "j", "status": "queued"}
    assert seen == ["/v1/jobs/j"] * 3
    exhausted = mock_client(lambda _request: answers[0], retries=1, backoff_s=0)
    with pytest.raises(ApiError) as error:
        exhausted.job("j")
    assert error.value.status == 503 and str(error.value) == "Service Unavailable"


def test_default_url_and_the_make_run_key(tmp_path, monkeypatch):
    for name in ("BPS_URL", "BPS_API_KEY", "BPS_VAR_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    assert Client().api_key is None
    (tmp_path / "var").mkdir()
    (tmp_path / "var" / "dev-api-key").write_text("bps_devkey\n")
    assert Client().url == "http://127.0.0.1:8000" and Client().api_key == "bps_devkey"
    assert Client("http://elsewhere:9000").api_key is None, "the dev key is for the default URL only"
    monkeypatch.setenv("BPS_API_KEY", "from-env")
    monkeypatch.setenv("BPS_URL", "http://h:1")
    assert (Client().url, Client().api_key) == ("http://h:1", "from-env")


def test_progress_bar_of_a_job_that_has_already_ended_shows_its_epochs(client, trained, capfd):
    final = client.wait(trained["id"], progress=True)
    err = capfd.readouterr().err
    assert final["id"] == trained["id"]
    assert f"epoch {SPEC['epochs']}/{SPEC['epochs']}" in err and "succeeded" in err, err


@pytest.mark.parametrize(("method", "status", "attempts"), [
    ("GET", 502, 3), ("GET", 504, 3), ("DELETE", 502, 3),
    ("POST", 502, 1), ("POST", 504, 1), ("POST", 503, 3), ("POST", 429, 3)])
def test_a_post_is_repeated_only_on_answers_that_say_nothing_was_done(method, status, attempts):
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.method)
        return httpx.Response(status, headers={"Retry-After": "0"}, json={"title": "upstream"})

    with mock_client(handler, retries=2, backoff_s=0) as c:
        with pytest.raises(ApiError) as error:
            c.transport.request(method, "/v1/jobs")
    assert error.value.status == status and seen == [method] * attempts
