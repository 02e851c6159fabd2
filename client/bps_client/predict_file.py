"""`bpsc predict`: every row of a CSV or Parquet file of any size, sent in pieces under the
server's MAX_PREDICTION_ROWS, written as CSV: the input's id column if any, `prediction`, and
`probability_<label>` per class."""
from __future__ import annotations

import csv
from pathlib import Path
from typing import IO, Any

from bps_client import tables
from bps_client.errors import ApiError

READ_ROWS = 50_000  # rows read from the file at a time (sent in smaller pieces)


def id_column(columns: list[str], features: list[str] | None) -> str | None:
    """The first column named like an id ("id", "*_id", "*id") that is not a feature."""
    for name in columns:
        lower = name.lower()
        if name not in (features or []) and (lower == "id" or lower.endswith("_id") or lower.endswith(" id")):
            return name
    return None


def _header(id_name: str | None, prediction: dict, classes: list[Any] | None) -> list[str]:
    first = prediction["predictions"][0] if prediction["predictions"] else None
    values = [f"prediction_{j}" for j in range(len(first))] if isinstance(first, list) else ["prediction"]
    probabilities = prediction.get("probabilities") or []
    width = len(probabilities[0]) if probabilities else 0
    labels = classes if classes and len(classes) == width else list(range(width))
    return ([id_name] if id_name else []) + values + [f"probability_{label}" for label in labels]


def _rows(ids: list[Any] | None, prediction: dict) -> list[list[Any]]:
    probabilities = prediction.get("probabilities") or [[] for _ in prediction["predictions"]]
    out = []
    for k, (value, probs) in enumerate(zip(prediction["predictions"], probabilities, strict=True)):
        values = value if isinstance(value, list) else [value]
        out.append(([ids[k]] if ids is not None else []) + values + list(probs))
    return out


def _model_rows(chunk: Any, features: list[str] | None, id_name: str | None) -> Any:
    if features:
        present = tables.columns_of(chunk)
        return tables.select_columns(chunk, [f for f in features if f in present] or present)
    others = [c for c in tables.columns_of(chunk) if c != id_name]
    return tables.as_instances(tables.select_columns(chunk, others))


def _located(error: ApiError, path: str | Path, first_row: int) -> ApiError:
    """`error` saying where its request's rows are in the file: the server counts rows within
    the request, and a request holds only a piece of the file."""
    where = f"(in the request of rows from row {first_row} of {path} on; the file's rows count from 0 after its header)"
    detail = error.problem.get("detail")
    return ApiError(error.status, {**error.problem, "detail": f"{detail} {where}" if detail else where})


def predict_file(client: Any, model_id: str, path: str | Path, out: IO[str], chunk_rows: int) -> dict[str, Any]:
    """Writes the CSV to `out`; returns {"model_id", "n", "prediction_ids"}."""
    model = client.model(model_id)
    features, classes = model.get("features"), model.get("classes")
    writer, n, prediction_ids = csv.writer(out), 0, []
    header_written = False
    for chunk in tables.read_chunks(path, max(chunk_rows, READ_ROWS)):
        id_name = id_column(tables.columns_of(chunk), features)
        ids = tables.column(chunk, id_name) if id_name else None
        rows = _model_rows(chunk, features, id_name)
        done = 0
        try:
            for prediction in client.predict_chunks(model_id, [rows], chunk_rows):
                if not header_written:
                    writer.writerow(_header(id_name, prediction, classes))
                    header_written = True
                piece_ids = ids[done:done + prediction["n"]] if ids is not None else None
                writer.writerows(_rows(piece_ids, prediction))
                done += prediction["n"]
                prediction_ids.append(prediction["id"])
        except ApiError as error:
            raise _located(error, path, n + done) from None
        n += done
    return {"model_id": model_id, "n": n, "prediction_ids": prediction_ids}
