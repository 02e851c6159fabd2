"""`Client`: one method per resource of the Backprop Service API (CONTRACT §2, §5, §7)."""
from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from bps_client import tables
from bps_client.downloads import Target, pick_format, save
from bps_client.errors import ApiError
from bps_client.pages import DEFAULT_PAGE_SIZE, each_item
from bps_client.transport import Transport, path_id

DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_CHUNK_ROWS = 1000
MODEL_SUFFIXES = {".npz": "npz", ".onnx": "onnx"}
ROWS_SUFFIXES = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}


def dev_key(url: str) -> str | None:
    """The key `make run` saved (var/dev-api-key, or under BPS_VAR_DIR), for the default URL only."""
    if url.rstrip("/") != DEFAULT_URL:
        return None
    path = Path(os.environ.get("BPS_VAR_DIR") or "var") / "dev-api-key"
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


class Client:
    """`url`/`api_key` default to BPS_URL (else http://127.0.0.1:8000) and BPS_API_KEY (else,
    on the default URL, the development key that `make run` wrote under var/). Every HTTP
    error raises ApiError; 429/503 are retried `retries` times, honouring Retry-After.

    `http`: an httpx.Client of your own to send the requests through (a proxy, certificates, a
    mock transport); its base_url (also `Client.url`, and what decides whether the development
    key applies) and timeout are used, not `url` and `timeout`. `api_key` is
    sent with each of its requests too, over any Authorization header the client carries. Where
    `api_key` is not given and that client carries one, its header is used (BPS_API_KEY and the
    development key are not)."""

    def __init__(self, url: str | None = None, api_key: str | None = None, *, timeout: float = 60.0,
                 retries: int = 4, backoff_s: float = 0.5, http: httpx.Client | None = None) -> None:
        given = url or os.environ.get("BPS_URL") or DEFAULT_URL
        self.url = (str(http.base_url) if http is not None else given).rstrip("/")  # where requests go
        own_header = http is not None and "Authorization" in http.headers
        self.api_key = api_key or (None if own_header else os.environ.get("BPS_API_KEY") or dev_key(self.url))
        self.transport = Transport(self.url, self.api_key, timeout=timeout, retries=retries, backoff_s=backoff_s,
                                   http=http)

    def close(self) -> None:
        self.transport.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _get(self, path: str, **params: Any) -> Any:
        return self.transport.json("GET", path, params={k: v for k, v in params.items() if v is not None})

    # ---- datasets ------------------------------------------------------------------------
    def upload(self, data: Any = None, *, X: Any = None, y: Any = None, name: str | None = None) -> dict:
        """A path (CSV, Parquet, .npz), a pandas DataFrame, or X=/y= arrays -> the Dataset."""
        filename, raw = tables.upload_payload(data, X=X, y=y)
        form = {"name": name} if name else None
        return self.transport.json("POST", "/v1/datasets", files={"file": (filename, raw)}, data=form)

    def datasets(self, *, limit: int | None = None, offset: int | None = None) -> list[dict]:
        """One page, newest first (the server's `limit`, default 100, and `offset`); every page: iter_datasets."""
        return self._get("/v1/datasets", limit=limit, offset=offset)

    def iter_datasets(self, *, page_size: int = DEFAULT_PAGE_SIZE) -> Iterator[dict]:
        return each_item(self.transport, "/v1/datasets", {}, page_size)

    def dataset(self, dataset_id: str) -> dict:
        return self._get(f"/v1/datasets/{path_id(dataset_id)}")

    def delete_dataset(self, dataset_id: str) -> None:
        self.transport.request("DELETE", f"/v1/datasets/{path_id(dataset_id)}")

    # ---- jobs ----------------------------------------------------------------------------
    def submit(self, dataset_id: str, spec: dict, *, target: str | None = None, features: list[str] | None = None,
               input_shape: list[int] | None = None, impute: str | None = None) -> dict:
        """POST /v1/jobs -> the queued Job (ApiError 422 names every problem of the spec)."""
        body = {"dataset_id": dataset_id, "spec": spec, "target": target, "features": features,
                "input_shape": input_shape, "impute": impute}
        return self.transport.json("POST", "/v1/jobs", json={k: v for k, v in body.items() if v is not None})

    def jobs(self, *, status: str | None = None, limit: int | None = None, offset: int | None = None) -> list[dict]:
        """Newest first (the server's page: `limit`, `offset`)."""
        return self._get("/v1/jobs", status=status, limit=limit, offset=offset)

    def iter_jobs(self, *, status: str | None = None, page_size: int = DEFAULT_PAGE_SIZE) -> Iterator[dict]:
        """Every job (of `status`), newest first, a page at a time (the Link header's next)."""
        return each_item(self.transport, "/v1/jobs", {"status": status}, page_size)

    def job(self, job_id: str) -> dict:
        return self._get(f"/v1/jobs/{path_id(job_id)}")

    def cancel(self, job_id: str) -> dict:
        return self.transport.json("POST", f"/v1/jobs/{path_id(job_id)}/cancel")

    def delete_job(self, job_id: str) -> None:
        """A finished job with its epochs (its model stays); ApiError 409 while queued or running."""
        self.transport.request("DELETE", f"/v1/jobs/{path_id(job_id)}")

    def epochs(self, job_id: str, *, since: int | None = None, as_frame: bool = False) -> Any:
        """The job's Epoch dicts in order (only those after epoch `since`); as_frame=True: a
        pandas DataFrame indexed by epoch."""
        epochs = self._get(f"/v1/jobs/{path_id(job_id)}/epochs", since=since)["epochs"]
        return tables.epochs_frame(epochs) if as_frame else epochs

    def events(self, job_id: str, last_event_id: str | None = None,
               read_timeout: float = 60.0) -> Iterator[tuple[str, str | None, dict]]:
        """The job's server-sent events as (event, id, data) until the stream ends."""
        from bps_client.watch import stream_events  # noqa: PLC0415

        return stream_events(self.transport, job_id, last_event_id, read_timeout)

    def wait(self, job_id: str, *, progress: bool = False, timeout: float | None = None,
             poll_interval: float = 1.0) -> dict:
        """Blocks until the job ends and returns the final Job; JobFailed if it failed or was
        cancelled. Follows the event stream (polls where it is unavailable); progress=True
        draws a progress bar on stderr."""
        from bps_client.watch import Watcher  # noqa: PLC0415

        return Watcher(self, job_id, progress=progress, timeout=timeout, poll_interval=poll_interval).run()

    # ---- models and predictions ----------------------------------------------------------
    def models(self, *, limit: int | None = None, offset: int | None = None) -> list[dict]:
        """One page, newest first; every page: iter_models."""
        return self._get("/v1/models", limit=limit, offset=offset)

    def iter_models(self, *, page_size: int = DEFAULT_PAGE_SIZE) -> Iterator[dict]:
        return each_item(self.transport, "/v1/models", {}, page_size)

    def model(self, model_id: str) -> dict:
        return self._get(f"/v1/models/{path_id(model_id)}")

    def delete_model(self, model_id: str) -> None:
        """The model and its predictions; ApiError 409 while an asynchronous prediction of it runs."""
        self.transport.request("DELETE", f"/v1/models/{path_id(model_id)}")

    def evaluate(self, model_id: str, *, dataset_id: str | None = None, instances: Any = None,
                 targets: Any = None) -> dict:
        """The model scored on rows holding the truth: one of your datasets (with the model's
        target column), or `instances` (lists or an ndarray in the model's feature order) with
        one target each -> the Evaluation (loss; accuracy and confusion_matrix, or r2, mae, rmse).
        A DataFrame's (or dicts') columns are sent in the model's feature order, by name."""
        body: dict[str, Any] = {"dataset_id": dataset_id}
        if instances is not None or targets is not None:
            if instances is not None and tables.has_names(instances):
                instances = tables.in_feature_order(instances, self.model(model_id).get("features"))
            body["instances"] = None if instances is None else tables.json_rows(instances)
            body["targets"] = None if targets is None else tables.json_rows(targets)
        return self.transport.json("POST", f"/v1/models/{path_id(model_id)}/evaluations",
                                   json={k: v for k, v in body.items() if v is not None})

    def predict(self, model_id: str, rows: Any) -> dict:
        """rows: a list of lists (feature order), a list of dicts, a DataFrame or an ndarray ->
        the Prediction (at most the server's MAX_PREDICTION_ROWS rows: see predict_chunks)."""
        return self.transport.json("POST", f"/v1/models/{path_id(model_id)}/predictions",
                                   json=tables.prediction_body(rows))

    def predict_chunks(self, model_id: str, chunks: Any, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> Iterator[dict]:
        """One Prediction per piece of each chunk of rows, each piece at most `chunk_rows` rows;
        a 413 (MAX_PREDICTION_ROWS) shrinks the pieces to the problem's `max_rows` and retries."""
        for chunk in chunks:
            start = 0
            while start < tables.n_rows(chunk):
                piece = tables.row_slice(chunk, start, start + chunk_rows)
                try:
                    prediction = self.predict(model_id, piece)
                except ApiError as error:
                    if error.status != 413 or chunk_rows == 1:
                        raise
                    chunk_rows = _limit_from(error, chunk_rows)
                    continue
                start += tables.n_rows(piece)
                yield prediction

    def download(self, model_id: str, path: Target | None = None, *, format: str | None = None) -> Any:  # noqa: A002
        """Saves the model, streamed, to `path` (a path or a binary file; default
        model-<id>.<format>) as "npz" or "onnx" (default: the path's suffix, else npz); returns
        the path (the file object when given one)."""
        fmt = pick_format(path, format, MODEL_SUFFIXES, "npz")
        return save(self.transport, f"/v1/models/{path_id(model_id)}/download", {"format": fmt},
                    f"model-{model_id}.{fmt}" if path is None else path)

    # ---- asynchronous predictions --------------------------------------------------------
    def predict_async(self, model_id: str, dataset_id: str) -> dict:
        """Every row of one of your datasets, predicted by the workers -> the queued Prediction
        (202); follow it with wait_prediction, then download_prediction."""
        return self.transport.json("POST", f"/v1/models/{path_id(model_id)}/predictions",
                                   json={"dataset_id": dataset_id, "async": True})

    def prediction(self, prediction_id: str) -> dict:
        return self._get(f"/v1/predictions/{path_id(prediction_id)}")

    def predictions(self, *, model_id: str | None = None, limit: int | None = None,
                    offset: int | None = None) -> list[dict]:
        """One page of summaries (no rows), newest first; `model_id` keeps one model's."""
        return self._get("/v1/predictions", model_id=model_id, limit=limit, offset=offset)

    def iter_predictions(self, *, model_id: str | None = None, page_size: int = DEFAULT_PAGE_SIZE) -> Iterator[dict]:
        return each_item(self.transport, "/v1/predictions", {"model_id": model_id}, page_size)

    def delete_prediction(self, prediction_id: str) -> None:
        """ApiError 409 while an asynchronous prediction is queued or running."""
        self.transport.request("DELETE", f"/v1/predictions/{path_id(prediction_id)}")

    def wait_prediction(self, prediction_id: str, *, progress: bool = False, timeout: float | None = None,
                        poll_interval: float = 2.0) -> dict:
        """Blocks until the prediction ends and returns it; PredictionFailed (with the server's
        reason) if it failed. Polls at intervals growing as the retries' backoff, up to
        `poll_interval` s; progress=True draws a bar of the rows predicted on stderr."""
        from bps_client.prediction_wait import wait_prediction  # noqa: PLC0415

        return wait_prediction(self, prediction_id, progress=progress, timeout=timeout, poll_interval=poll_interval)

    def download_prediction(self, prediction_id: str, path: Target | None = None, *,
                            format: str | None = None) -> Any:  # noqa: A002
        """Every row of a succeeded prediction, streamed to `path` (a path or a binary file;
        default prediction-<id>.<format>) as "csv" or "parquet" (default: the path's suffix,
        else csv): `prediction` (or prediction_<i>) and probability_<label> per class. ApiError
        409 until it has succeeded. Returns the path (the file object when given one)."""
        fmt = pick_format(path, format, ROWS_SUFFIXES, "csv")
        return save(self.transport, f"/v1/predictions/{path_id(prediction_id)}/download", {"format": fmt},
                    f"prediction-{prediction_id}.{fmt}" if path is None else path)

def _limit_from(error: ApiError, current: int) -> int:
    """The row limit the 413 problem gives in `max_rows`, else half the current size."""
    limit = error.problem.get("max_rows")
    if not isinstance(limit, int) or isinstance(limit, bool):
        limit = current // 2
    return max(1, min(limit, current - 1))
