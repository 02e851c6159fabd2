"""Rows in and out without requiring pandas: upload payloads, prediction bodies, tables read
in chunks (CSV with the csv module, or pandas/pyarrow when installed), epochs as a DataFrame."""
from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

PARQUET_SUFFIXES = (".parquet", ".pq")


def _is_frame(value: Any) -> bool:
    return type(value).__name__ == "DataFrame" and hasattr(value, "to_csv")


def upload_payload(data: Any, *, X: Any = None, y: Any = None) -> tuple[str, bytes]:
    """(filename, bytes) for POST /v1/datasets from a path, a DataFrame, or X/y arrays."""
    if X is not None or y is not None:
        if X is None or y is None or data is not None:
            raise TypeError("upload(X=..., y=...) takes both arrays and no other data")
        import numpy as np  # noqa: PLC0415

        buffer = io.BytesIO()
        np.savez(buffer, X=np.asarray(X), y=np.asarray(y))
        return "data.npz", buffer.getvalue()
    if _is_frame(data):
        return "data.csv", data.to_csv(index=False).encode()
    if isinstance(data, (str, Path)):
        path = Path(data)
        return path.name, path.read_bytes()
    raise TypeError(f"upload takes a path, a pandas DataFrame or X=/y= arrays, not {type(data).__name__}")


def _json_value(value: Any) -> Any:
    if hasattr(value, "item") and not isinstance(value, (list, dict, str)):
        value = value.item()  # NumPy scalar
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def prediction_body(rows: Any) -> dict[str, Any]:
    """{"instances": ...} for lists of values and arrays, {"records": ...} for dicts and DataFrames."""
    if _is_frame(rows):
        frame = rows.astype(object).where(rows.notna(), None)
        return {"records": [{str(k): _json_value(v) for k, v in rec.items()} for rec in frame.to_dict("records")]}
    rows = rows.tolist() if hasattr(rows, "tolist") else list(rows)
    if rows and all(isinstance(row, dict) for row in rows):
        return {"records": [{k: _json_value(v) for k, v in row.items()} for row in rows]}
    return {"instances": [_nested_json(row) for row in rows]}


def has_names(rows: Any) -> bool:
    """A DataFrame, or a non-empty list of dicts: values named by their columns."""
    return _is_frame(rows) or (isinstance(rows, list) and bool(rows) and all(isinstance(row, dict) for row in rows))


def json_rows(rows: Any) -> list[Any]:
    """Rows (or targets) as JSON lists: a DataFrame's or dicts' values in column order, a Series,
    lists and arrays as they are; NaN and infinities as null."""
    if has_names(rows):
        rows = as_instances(rows)
    rows = rows.tolist() if hasattr(rows, "tolist") else list(rows)
    return [_nested_json(row) for row in rows]


def _nested_json(value: Any) -> Any:
    """Lists (of lists) of values with NaN/inf as null: JSON has no NaN."""
    if isinstance(value, (list, tuple)):
        return [_nested_json(v) for v in value]
    return _json_value(value)


def n_rows(rows: Any) -> int:
    return len(rows)


def row_slice(rows: Any, start: int, stop: int) -> Any:
    return rows.iloc[start:stop] if _is_frame(rows) else rows[start:stop]


def _number_or_text(text: str) -> Any:
    if text == "":
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _csv_chunks(path: Path, chunk_rows: int) -> Iterator[list[dict[str, Any]]]:
    with path.open(newline="") as handle:
        chunk: list[dict[str, Any]] = []
        for row in csv.DictReader(handle):
            chunk.append({k: _number_or_text(v) for k, v in row.items()})
            if len(chunk) == chunk_rows:
                yield chunk
                chunk = []
        if chunk:
            yield chunk


def read_chunks(path: str | Path, chunk_rows: int) -> Iterator[Any]:
    """The rows of a CSV or Parquet file, `chunk_rows` at a time: DataFrames with pandas
    installed, else lists of dicts (Parquet needs pyarrow)."""
    path = Path(path)
    if path.suffix.lower() in PARQUET_SUFFIXES:
        try:
            import pyarrow.parquet as pq  # noqa: PLC0415
        except ImportError:
            raise RuntimeError("reading Parquet needs pyarrow: pip install pyarrow") from None
        for batch in pq.ParquetFile(path).iter_batches(batch_size=chunk_rows):
            yield batch.to_pandas() if _has_pandas() else batch.to_pylist()
        return
    if _has_pandas():
        import pandas as pd  # noqa: PLC0415

        yield from pd.read_csv(path, chunksize=chunk_rows)
        return
    yield from _csv_chunks(path, chunk_rows)


def _has_pandas() -> bool:
    try:
        import pandas  # noqa: F401, PLC0415
    except ImportError:
        return False
    return True


def columns_of(rows: Any) -> list[str]:
    if _is_frame(rows):
        return [str(c) for c in rows.columns]
    return list(rows[0]) if rows else []


def column(rows: Any, name: str) -> list[Any]:
    if _is_frame(rows):
        return [_json_value(v) for v in rows[name].tolist()]
    return [row.get(name) for row in rows]


def select_columns(rows: Any, names: list[str]) -> Any:
    if _is_frame(rows):
        return rows[names]
    return [{name: row.get(name) for name in names} for row in rows]


def in_feature_order(rows: Any, features: list[str] | None) -> Any:
    """Named rows (a DataFrame, dicts) as lists of values in the model's `features` order
    (ValueError naming any it lacks); a model without named features: in column order."""
    if features:
        missing = [name for name in features if name not in columns_of(rows)]
        if missing:
            raise ValueError(f"the rows lack the model's features {missing}")
        rows = select_columns(rows, features)
    return as_instances(rows)


def as_instances(rows: Any) -> Any:
    """Rows as lists of values in column order (for models trained on arrays)."""
    if _is_frame(rows):
        return rows.to_numpy()
    return [list(row.values()) for row in rows]


def epochs_frame(epochs: list[dict[str, Any]]) -> Any:
    """Epoch dicts -> a DataFrame indexed by epoch, one grad_norm/<param> column per parameter."""
    try:
        import pandas as pd  # noqa: PLC0415
    except ImportError:
        raise RuntimeError("as_frame=True needs pandas: pip install pandas") from None
    flat = [{**{k: v for k, v in e.items() if k != "grad_norms"},
             **{f"grad_norm/{name}": norm for name, norm in (e.get("grad_norms") or {}).items()}} for e in epochs]
    frame = pd.DataFrame(flat)
    return frame.set_index("epoch") if "epoch" in frame.columns else frame
