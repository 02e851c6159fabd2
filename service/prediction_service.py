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
from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from bps.config import Settings
from bps.db import engine
from bps.models import Dataset, Model, Prediction, PredictionChunk
from bps.preprocessor import Preprocessor
from bps.problems import Conflict, Unprocessable
from service.job_service import check_tenant_quota
from service.predict import check_input_kind, get_model, get_prediction

DOWNLOAD_FORMATS = ("csv", "parquet")
STREAM_BLOCK_BYTES = 1 << 20


def _check_dataset_fits(prep: Preprocessor, dataset: Dataset) -> None:
    """The same refusals as a synchronous dataset prediction, made before anything is queued."""
    loc = ["body", "dataset_id"]
    check_input_kind(prep, dataset.format, loc, dataset.id)
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


def over_sync_limit(dataset: Dataset, max_rows: int) -> bool:
    """Whether the dataset has more rows than a synchronous prediction takes."""
    return dataset.n_rows > max_rows


def create_async_prediction(*, session: Session, tenant_id: str, model_id: str, dataset: Dataset,
                            settings: Settings) -> Prediction:
    """The queued Prediction (flushed; the caller commits, then publishes). `dataset`: the tenant's
    row (referenced_dataset's), looked up by the caller."""
    model = get_model(session=session, tenant_id=tenant_id, model_id=model_id)
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


def _stored_outputs(database_url: str, prediction: Prediction) -> Iterator[np.ndarray]:
    """An asynchronous prediction's outputs in seq order, one stored chunk at a time, each read
    through a connection of its own: none is held while the client takes a chunk (a slow
    download would keep one of the pool's connections, and a few such would leave the process's
    other requests waiting for one). A chunk gone before the prediction's `n` rows came (deleted
    meanwhile) ends the stream with an error, not a short file that looks complete."""
    query = select(PredictionChunk.outputs).where(PredictionChunk.prediction_id == prediction.id,
                                                  PredictionChunk.seq == bindparam("seq"))
    bind, rows, seq = engine(database_url), 0, 0
    while rows < prediction.n:
        with bind.connect() as connection:
            data = connection.scalar(query, {"seq": seq})
        if data is None:
            raise LookupError(f"prediction {prediction.id}: chunk {seq} is gone after {rows} of its "
                              f"{prediction.n} rows (deleted during the download?)")
        outputs = np.load(io.BytesIO(data), allow_pickle=False)
        rows, seq = rows + len(outputs), seq + 1
        yield outputs


def _synchronous(prediction: Prediction) -> bool:
    return prediction.status == "succeeded" and not prediction.dataset_id


def _row_blocks(database_url: str, prediction: Prediction, prep: Preprocessor) -> Iterator[list[list[Any]]]:
    """The prediction's rows, one stored chunk at a time (a synchronous one: its JSON rows)."""
    if _synchronous(prediction):
        predictions = [p if isinstance(p, list) else [p] for p in prediction.predictions]
        yield [row + probs for row, probs in zip(predictions, prediction.probabilities or [[]] * len(predictions),
                                                 strict=True)]
        return
    for outputs in _stored_outputs(database_url, prediction):
        yield decoded_rows(prep, outputs)


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(value: Any) -> Any:
    """A text cell that a spreadsheet would run as a formula (OWASP's CSV injection list: it
    starts with = + - @, a tab or a carriage return) prefixed with a single quote; numbers and
    other text as they are."""
    return "'" + value if isinstance(value, str) and value.startswith(FORMULA_STARTS) else value


def _csv_text(rows: list[list[Any]]) -> str:
    """Rows as csv's writer writes them (a float as its repr), text cells made spreadsheet_safe."""
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerows([spreadsheet_safe(cell) for cell in row] for row in rows)
    return text.getvalue()


class _LabelCells(dict):
    """Each label's CSV cell (quoted as csv quotes it, spreadsheet_safe), made once."""

    def __missing__(self, label: Any) -> str:
        self[label] = cell = _csv_text([[label]])[:-1]
        return cell


def _chunk_csv(prep: Preprocessor, outputs: np.ndarray, labels: _LabelCells) -> str:
    """One stored chunk's rows, a column at a time: the same text as _csv_text of its decoded
    rows (pinned by a test), without a Python list per row and a writer call per cell."""
    if not np.isfinite(outputs).all():  # never stored by a worker; the writer's empty cells if it were
        return _csv_text(decoded_rows(prep, outputs))
    predictions, probabilities = prep.decode_arrays(outputs)
    columns = []
    for block in (predictions, probabilities):
        block = block.reshape(len(block), -1) if block is not None else np.zeros((0, 0))
        for values in block.T:
            cells = labels.__getitem__ if block.dtype == object else repr if block.dtype.kind == "f" else str
            columns.append(map(cells, values.tolist()))
    return "".join(f"{','.join(row)}\n" for row in zip(*columns))


def csv_stream(database_url: str, prediction: Prediction, prep: Preprocessor) -> Iterator[bytes]:
    yield _csv_text([column_names(prep)]).encode()
    if _synchronous(prediction):
        for block in _row_blocks(database_url, prediction, prep):
            yield _csv_text(block).encode()
        return
    labels = _LabelCells()
    for outputs in _stored_outputs(database_url, prediction):
        yield _chunk_csv(prep, outputs, labels).encode()


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
