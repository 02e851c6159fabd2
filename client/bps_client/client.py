"""`Client`: one method per resource of the Backprop Service API (CONTRACT §2, §5)."""
from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from bps_client import tables
from bps_client.errors import ApiError
from bps_client.transport import Transport, path_id

DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_CHUNK_ROWS = 1000


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
    error raises ApiError; 429/503 are retried `retries` times, honouring Retry-After."""

    def __init__(self, url: str | None = None, api_key: str | None = None, *, timeout: float = 60.0,
                 retries: int = 4, backoff_s: float = 0.5, http: httpx.Client | None = None) -> None:
        self.url = (url or os.environ.get("BPS_URL") or DEFAULT_URL).rstrip("/")
        self.api_key = api_key or os.environ.get("BPS_API_KEY") or dev_key(self.url)
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

    def datasets(self, limit: int | None = None, offset: int | None = None) -> list[dict]:
        return self._get("/v1/datasets", limit=limit, offset=offset)

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

    def jobs(self, status: str | None = None, limit: int | None = None, offset: int | None = None) -> list[dict]:
        """Newest first (the server's page: `limit`, `offset`)."""
        return self._get("/v1/jobs", status=status, limit=limit, offset=offset)

    def job(self, job_id: str) -> dict:
        return self._get(f"/v1/jobs/{path_id(job_id)}")

    def cancel(self, job_id: str) -> dict:
        return self.transport.json("POST", f"/v1/jobs/{path_id(job_id)}/cancel")

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
    def models(self, limit: int | None = None, offset: int | None = None) -> list[dict]:
        return self._get("/v1/models", limit=limit, offset=offset)

    def model(self, model_id: str) -> dict:
        return self._get(f"/v1/models/{path_id(model_id)}")

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

    def download(self, model_id: str, path: str | os.PathLike | None = None, *, format: str = "npz") -> Path:  # noqa: A002
        """Saves the model (npz or onnx) to `path` (default model-<id>.<format>); returns the path."""
        target = Path(path or f"model-{model_id}.{format}")
        response = self.transport.request("GET", f"/v1/models/{path_id(model_id)}/download",
                                          params={"format": format})
        target.write_bytes(response.content)
        return target


def _limit_from(error: ApiError, current: int) -> int:
    """The row limit the 413 problem gives in `max_rows`, else half the current size."""
    limit = error.problem.get("max_rows")
    if not isinstance(limit, int) or isinstance(limit, bool):
        limit = current // 2
    return max(1, min(limit, current - 1))
