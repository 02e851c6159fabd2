"""bps_client.Client's calls for what came after training, against real `bps api` + `bps worker`
processes: deletes (404 afterwards), every page of a list once, evaluations, asynchronous
predictions (waited for, downloaded as CSV and Parquet, a failure raising the server's reason),
and the ONNX download."""
from __future__ import annotations

import csv
import io

import numpy as np
import onnx
import pandas as pd
import pytest

from bps_client import ApiError, Client, PredictionFailed
from tests.client.conftest import IRIS, MAX_PREDICTION_ROWS, SPEC, mock_client

pytestmark = pytest.mark.slow
CLASSES = ["setosa", "versicolor", "virginica"]


def assert_gone(call, *args) -> None:  # noqa: ANN001
    with pytest.raises(ApiError) as missing:
        call(*args)
    assert missing.value.status == 404, missing.value


def synchronous_rows(client: Client, model_id: str, frame: pd.DataFrame) -> list[list]:
    """[prediction, probability per class] of every row, from synchronous predictions in pieces."""
    rows = []
    for piece in client.predict_chunks(model_id, [frame], chunk_rows=MAX_PREDICTION_ROWS):
        rows += [[label, *probs] for label, probs in zip(piece["predictions"], piece["probabilities"], strict=True)]
    return rows


def assert_rows_equal(downloaded: pd.DataFrame, expected: list[list]) -> None:
    assert list(downloaded.columns) == ["prediction", *(f"probability_{c}" for c in CLASSES)]
    assert downloaded["prediction"].tolist() == [row[0] for row in expected]
    np.testing.assert_allclose(downloaded.iloc[:, 1:].to_numpy(dtype=float), [row[1:] for row in expected],
                               rtol=1e-6, atol=1e-9)


@pytest.fixture(scope="module")
def features() -> pd.DataFrame:
    return pd.read_csv(IRIS).drop(columns="species")


def test_an_async_prediction_downloads_as_csv_and_parquet_equal_to_synchronous_ones(
        client, trained, features, tmp_path, capfd):
    queued = client.predict_async(trained["model_id"], trained["dataset_id"])
    assert queued["status"] in ("queued", "running", "succeeded") and queued["n"] == len(features)
    final = client.wait_prediction(queued["id"], progress=True, timeout=120)
    assert final["status"] == "succeeded" and final["progress"] == 1.0
    assert f"{len(features)}/{len(features)}" in capfd.readouterr().err
    expected = synchronous_rows(client, trained["model_id"], features)
    path = client.download_prediction(final["id"], tmp_path / "rows.csv")
    assert path == tmp_path / "rows.csv" and not list(tmp_path.glob(".*.part"))
    assert_rows_equal(pd.read_csv(path), expected)
    parquet = client.download_prediction(final["id"], tmp_path / "rows.parquet")  # the format from the suffix
    assert_rows_equal(pd.read_parquet(parquet), expected)
    buffer = client.download_prediction(final["id"], io.BytesIO(), format="csv")
    assert buffer.getvalue() == path.read_bytes()


def test_a_failed_async_prediction_raises_with_the_servers_reason(client, trained, features, tmp_path):
    broken = features.copy()
    broken.loc[5, "petal length (cm)"] = 1e39  # finite, beyond the float32 model: the worker refuses row 5
    dataset = client.upload(broken, name="too large")
    queued = client.predict_async(trained["model_id"], dataset["id"])
    with pytest.raises(PredictionFailed) as failed:
        client.wait_prediction(queued["id"], timeout=120)
    reason = client.prediction(queued["id"])["error"]
    assert failed.value.status == "failed" and failed.value.error == reason
    assert "row 5" in reason and reason in str(failed.value)
    with pytest.raises(ApiError) as conflict:
        client.download_prediction(queued["id"], tmp_path / "rows.csv")
    assert conflict.value.status == 409 and reason in str(conflict.value)
    assert not list(tmp_path.iterdir()), "a refused download leaves no file"


def test_wait_prediction_gives_up_at_its_timeout(capfd):
    import httpx

    polls = []

    def handler(request: httpx.Request) -> httpx.Response:
        polls.append(request.url.path)
        return httpx.Response(200, json={"id": "p", "status": "running", "n": 10, "progress": 0.3})

    with pytest.raises(TimeoutError):
        mock_client(handler, backoff_s=0.01).wait_prediction("p", timeout=0.3, progress=True)
    assert len(polls) > 1 and set(polls) == {"/v1/predictions/p"}
    assert "3/10" in capfd.readouterr().err


def test_evaluate_a_dataset_and_instances_with_targets(client, trained):
    held_out = pd.read_csv(IRIS).iloc[[0, 1, 60, 61, 120, 121, 70]]
    dataset = client.upload(held_out, name="held out")
    X, y = held_out.drop(columns="species"), held_out["species"]
    by_dataset = client.evaluate(trained["model_id"], dataset_id=dataset["id"])
    by_rows = client.evaluate(trained["model_id"], instances=X, targets=y)
    predicted = client.predict(trained["model_id"], X)["predictions"]
    assert by_dataset["n"] == by_rows["n"] == len(held_out)
    assert by_dataset["accuracy"] == by_rows["accuracy"] == np.mean(np.array(predicted) == y.to_numpy())
    matrix = by_rows["confusion_matrix"]
    assert matrix["labels"] == CLASSES and sum(map(sum, matrix["matrix"])) == len(held_out)
    assert sum(matrix["matrix"][k][k] for k in range(3)) == sum(p == t for p, t in zip(predicted, y, strict=True))
    assert by_dataset["loss"] == pytest.approx(by_rows["loss"], rel=1e-6) and by_rows["loss_name"] == "cross_entropy"
    with pytest.raises(ApiError) as unknown:
        client.evaluate(trained["model_id"], instances=X.iloc[:1].to_numpy(), targets=["daisy"])
    assert unknown.value.status == 422 and "daisy" in str(unknown.value)


def test_onnx_and_npz_downloads(client, trained, tmp_path):
    path = client.download(trained["model_id"], tmp_path / "iris.onnx")  # the format from the suffix
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    assert [i.name for i in model.graph.input] == ["input"]
    assert [o.name for o in model.graph.output] == ["probabilities"]
    named = client.download(trained["model_id"], tmp_path / "iris.bin", format="onnx")
    assert named.read_bytes() == path.read_bytes()
    npz = client.download(trained["model_id"], tmp_path / "iris.npz")
    with np.load(npz, allow_pickle=False) as saved:
        assert "preprocessing" in saved.files


def test_iteration_returns_every_item_once_across_pages(client, trained, features):
    ids = [client.predict(trained["model_id"], features.iloc[k:k + 1])["id"] for k in range(5)]
    first_page = client.predictions(model_id=trained["model_id"], limit=2)
    assert len(first_page) == 2
    every = [p["id"] for p in client.iter_predictions(model_id=trained["model_id"], page_size=2)]
    assert len(every) == len(set(every)) and set(ids) <= set(every)
    assert set(every) == {p["id"] for p in client.predictions(model_id=trained["model_id"], limit=1000)}
    assert every[:2] == [p["id"] for p in first_page], "newest first, as the pages"
    assert all(p["model_id"] == trained["model_id"] for p in client.iter_predictions(model_id=trained["model_id"]))
    for one_page, each in ((client.datasets, client.iter_datasets), (client.jobs, client.iter_jobs),
                           (client.models, client.iter_models)):
        listed = [item["id"] for item in each(page_size=1)]
        assert len(listed) == len(set(listed)) and listed == [item["id"] for item in one_page(limit=1000)]


def test_one_page_of_a_list_takes_its_filter_limit_and_offset_by_keyword_only():
    import httpx

    queries = []

    def handler(request: httpx.Request) -> httpx.Response:
        queries.append((request.url.path, dict(request.url.params)))
        return httpx.Response(200, json=[])

    client = mock_client(handler, retries=0)
    client.datasets(limit=5, offset=10)
    client.jobs(status="running", limit=5)
    client.models(offset=3)
    client.predictions(model_id="m", limit=2, offset=4)
    assert queries == [("/v1/datasets", {"limit": "5", "offset": "10"}),
                       ("/v1/jobs", {"status": "running", "limit": "5"}), ("/v1/models", {"offset": "3"}),
                       ("/v1/predictions", {"model_id": "m", "limit": "2", "offset": "4"})]
    for one_page, first in ((client.datasets, 5), (client.jobs, "running"), (client.models, 5),
                            (client.predictions, "m")):
        with pytest.raises(TypeError):
            one_page(first)
    assert len(queries) == 4


def test_a_new_item_while_paging_is_not_yielded_twice(client, trained, features):
    for k in range(3):
        client.predict(trained["model_id"], features.iloc[k:k + 1])
    pages = client.iter_predictions(model_id=trained["model_id"], page_size=2)
    seen = [next(pages)["id"], next(pages)["id"]]
    client.predict(trained["model_id"], features.iloc[:1])  # shifts every older one a place onto the next page
    seen += [p["id"] for p in pages]
    assert len(seen) == len(set(seen))


def test_delete_a_prediction_a_job_a_model_and_a_dataset(client, trained, features):
    prediction = client.predict(trained["model_id"], features.iloc[:2])
    client.delete_prediction(prediction["id"])
    assert_gone(client.prediction, prediction["id"])
    dataset = client.upload(IRIS, name="to delete")
    job = client.wait(client.submit(dataset["id"], {**SPEC, "epochs": 2}, target="species")["id"], timeout=120)
    kept = client.predict(job["model_id"], features.iloc[:2])
    client.delete_job(job["id"])
    assert_gone(client.job, job["id"])
    assert client.model(job["model_id"])["id"] == job["model_id"], "a model outlives its job"
    client.delete_model(job["model_id"])
    assert_gone(client.model, job["model_id"])
    assert_gone(client.prediction, kept["id"])  # a model's predictions go with it
    assert job["model_id"] not in {m["id"] for m in client.iter_models()}
    client.delete_dataset(dataset["id"])
    assert_gone(client.dataset, dataset["id"])
    for call in (client.delete_prediction, client.delete_job, client.delete_model, client.delete_dataset):
        assert_gone(call, "no-such-id")


def test_deleting_a_running_job_is_a_409_carrying_the_servers_problem(client, trained):
    job = client.submit(trained["dataset_id"], {**SPEC, "epochs": 3000}, target="species")
    with pytest.raises(ApiError) as conflict:
        client.delete_job(job["id"])
    assert conflict.value.status == 409 and "cancel it first" in str(conflict.value)


def test_a_download_cut_off_midway_leaves_no_file(tmp_path):
    import httpx

    def handler(request: httpx.Request) -> httpx.Response:
        def body():  # noqa: ANN202
            yield b"prediction\n"
            raise httpx.ReadError("connection reset", request=request)
        return httpx.Response(200, content=body())

    with pytest.raises(httpx.ReadError):
        mock_client(handler).download_prediction("p", tmp_path / "rows.csv")
    assert not list(tmp_path.iterdir())


def test_a_503_before_the_body_is_retried_for_a_download(tmp_path):
    import httpx

    answers = [httpx.Response(503, headers={"Retry-After": "0"}, json={"title": "Service Unavailable"}),
               httpx.Response(200, content=b"prediction\nsetosa\n")]
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return answers[len(seen) - 1]

    path = mock_client(handler).download_prediction("p", tmp_path / "rows.csv")
    assert list(csv.reader(path.open())) == [["prediction"], ["setosa"]]
    assert seen == ["http://bps.test/v1/predictions/p/download?format=csv"] * 2
