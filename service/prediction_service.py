"""Asynchronous predictions: a dataset prediction over MAX_PREDICTION_ROWS (or asked "async")
is checked, queued as a Prediction row and published to the workers (as a job is); and every
prediction's rows downloaded as CSV or Parquet, one stored chunk in memory at a time."""
from __future__ import annotations

import csv
import io
import tempfile
from collections.abc import Iterator
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from bps.config import Settings
from bps.db import session_scope
from bps.models import Dataset, Model, Prediction, PredictionChunk
from bps.preprocessor import Preprocessor
from bps.problems import Conflict, Unprocessable
from service.job_service import check_tenant_quota
from service.predict import get_model, get_prediction, referenced_dataset

DOWNLOAD_FORMATS = ("csv", "parquet")
STREAM_BLOCK_BYTES = 1 << 20


def _check_dataset_fits(prep: Preprocessor, dataset: Dataset) -> None:
    """The same refusals as a synchronous dataset prediction, made before anything is queued."""
    loc = ["body", "dataset_id"]
    if (dataset.format == "npz") != (prep.source == "array"):
        trained_on = "an .npz dataset" if prep.source == "array" else "named columns (CSV or Parquet)"
        raise Unprocessable(f"this model was trained on {trained_on}; dataset {dataset.id} is {dataset.format}",
                            loc=loc)
    names = {column.get("name") for column in dataset.columns or []}
    missing = [name for name in prep.features if name not in names]
    if prep.source == "tabular" and missing:
        raise Unprocessable(f"dataset {dataset.id} lacks the model's feature column(s) {missing}", loc=loc)
    unfillable = _unfillable_counts(prep, dataset)
    if unfillable:
        counts = ", ".join(f"{name!r} {count}" for name, count in unfillable.items())
        raise Unprocessable(f"dataset {dataset.id} has missing or non-finite values that this model cannot fill "
                            f"(it was trained without \"impute\"): {counts}; clean the data, or train a model "
                            "with \"impute\"", loc=loc)


def _unfillable_counts(prep: Preprocessor, dataset: Dataset) -> dict[str, int]:
    """{column: count} of the dataset's missing or non-finite feature values that the model has
    no fill for (from the stored profile): the worker would fail the prediction on them."""
    profile = {column.get("name"): column for column in dataset.columns or []}
    if prep.source == "array":
        count = int(profile.get("X", {}).get("non_finite") or 0)
        return {"X": count} if count and prep.array_fill is None else {}
    counts = {}
    for encoder in prep.encoders:
        column = profile.get(encoder["name"], {})
        if encoder["kind"] == "numeric":
            count = 0 if encoder.get("fill") is not None else int(column.get("non_finite") or 0)
        else:
            count = 0 if prep.impute is not None else int(column.get("missing") or 0)
        if count:
            counts[encoder["name"]] = count
    return counts


def _queue_for(session: Session, model: Model, settings: Settings) -> str:
    """The model's device: a GPU queue when it asks for one (or auto) and a GPU worker is alive."""
    from bps.workers import queue_for_device  # noqa: PLC0415

    device = str((model.spec or {}).get("device") or "auto")
    return queue_for_device(session=session, device="cpu" if device == "cpu" else "auto",
                            max_age_s=settings.worker_heartbeat_timeout_s)


def over_sync_limit(*, session: Session, tenant_id: str, dataset_id: str, max_rows: int) -> bool:
    """Whether the tenant's dataset has more rows than a synchronous prediction takes (another
    tenant's or a missing one: False, and the synchronous path answers its 422)."""
    n_rows = session.scalar(select(Dataset.n_rows).where(Dataset.id == dataset_id, Dataset.tenant_id == tenant_id))
    return n_rows is not None and n_rows > max_rows


def create_async_prediction(*, session: Session, tenant_id: str, model_id: str, dataset_id: str,
                            settings: Settings) -> Prediction:
    """The queued Prediction (flushed; the caller commits, then publishes)."""
    model = get_model(session=session, tenant_id=tenant_id, model_id=model_id)
    dataset = referenced_dataset(session, tenant_id, dataset_id)
    _check_dataset_fits(Preprocessor.from_json(model.preprocessing), dataset)
    check_tenant_quota(session, tenant_id, settings, table=Prediction, noun="asynchronous predictions")
    row = Prediction(tenant_id=tenant_id, model_id=model.id, n=dataset.n_rows, predictions=[], probabilities=None,
                     status="queued", progress=0.0, dataset_id=dataset.id, queue=_queue_for(session, model, settings))
    session.add(row)
    session.flush()
    return row


def column_names(prep: Preprocessor) -> list[str]:
    """`prediction` (or prediction_<i> per output) and probability_<label> per class."""
    if prep.mode == "regression":
        return ["prediction"] if prep.n_outputs == 1 else [f"prediction_{i}" for i in range(prep.n_outputs)]
    if prep.classes is None:  # multi-label binary (.npz): one 0/1 prediction and probability per output
        outputs = range(prep.n_outputs)
        return [f"prediction_{i}" for i in outputs] + [f"probability_{i}" for i in outputs]
    return ["prediction"] + [f"probability_{label}" for label in prep.classes]


def decoded_rows(prep: Preprocessor, outputs: np.ndarray) -> list[list[Any]]:
    """One list per row, in column_names' order."""
    predictions, probabilities = prep.decode(outputs)
    flat = [p if isinstance(p, list) else [p] for p in predictions]
    return [row + probs for row, probs in zip(flat, probabilities, strict=True)] if probabilities else flat


def _row_blocks(database_url: str, prediction: Prediction, prep: Preprocessor) -> Iterator[list[list[Any]]]:
    """The prediction's rows, one stored chunk at a time (a synchronous one: its JSON rows)."""
    if prediction.status == "succeeded" and not prediction.dataset_id:
        predictions = [p if isinstance(p, list) else [p] for p in prediction.predictions]
        yield [row + probs for row, probs in zip(predictions, prediction.probabilities or [[]] * len(predictions),
                                                 strict=True)]
        return
    seq = 0
    while True:
        with session_scope(database_url) as session:
            data = session.scalar(select(PredictionChunk.outputs).where(
                PredictionChunk.prediction_id == prediction.id, PredictionChunk.seq == seq))
        if data is None:
            return
        yield decoded_rows(prep, np.load(io.BytesIO(data), allow_pickle=False))
        seq += 1


def csv_stream(database_url: str, prediction: Prediction, prep: Preprocessor) -> Iterator[bytes]:
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(column_names(prep))
    for block in _row_blocks(database_url, prediction, prep):
        writer.writerows(block)
        yield text.getvalue().encode()
        text.seek(0)
        text.truncate()
    if text.tell():
        yield text.getvalue().encode()


def parquet_stream(database_url: str, prediction: Prediction, prep: Preprocessor) -> Iterator[bytes]:
    """One row group per stored chunk, written to a spooled temporary file, then streamed."""
    import pyarrow as pa  # noqa: PLC0415
    import pyarrow.parquet as pq  # noqa: PLC0415

    names = column_names(prep)
    with tempfile.SpooledTemporaryFile(max_size=16 << 20) as spool:
        writer = None
        for block in _row_blocks(database_url, prediction, prep):
            table = pa.table({name: [row[k] for row in block] for k, name in enumerate(names)})
            writer = writer or pq.ParquetWriter(spool, table.schema)
            writer.write_table(table.cast(writer.schema))
        if writer is None:
            writer = pq.ParquetWriter(spool, pa.schema([(name, pa.float64()) for name in names]))
        writer.close()
        spool.seek(0)
        while block := spool.read(STREAM_BLOCK_BYTES):
            yield block


def download_stream(*, session: Session, tenant_id: str, prediction_id: str, fmt: str,
                    database_url: str) -> Iterator[bytes]:
    """A generator of the file's bytes; 404 for another tenant's prediction, 409 until it succeeded."""
    prediction = get_prediction(session=session, tenant_id=tenant_id, prediction_id=prediction_id)
    if prediction.status != "succeeded":
        detail = f": {prediction.error}" if prediction.error else ""
        raise Conflict(f"prediction {prediction_id} is {prediction.status}{detail}; its rows can be downloaded "
                       "once it has succeeded", loc=["path", "prediction_id"])
    model = session.get(Model, prediction.model_id)
    prep = Preprocessor.from_json(model.preprocessing)
    session.expunge(prediction)
    stream = csv_stream if fmt == "csv" else parquet_stream
    return stream(database_url, prediction, prep)
