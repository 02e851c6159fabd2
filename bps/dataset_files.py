"""Reading and profiling uploaded dataset files: CSV (header row), Parquet and .npz.

Every refusal is an `Unprocessable` naming the line, column or array at fault. Nothing is
unpickled: .npz headers are checked (shape, dtype) before any array is read, and
`allow_pickle=False` everywhere.
"""
from __future__ import annotations

import csv
import io
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from bps.column_profiles import profile_frame, profile_values
from bps.csv_text import HEADER_SAMPLE_ROWS, csv_head, csv_options, refuse_headerless
from bps.problems import Unprocessable

FORMATS = ("csv", "parquet", "npz")
NPZ_ARRAYS = ("X", "y")


@dataclass
class ParsedDataset:
    format: str
    n_rows: int
    columns: list[dict[str, Any]]
    shapes: dict[str, list[int]] | None = field(default=None)


def detect_format(filename: str, raw: bytes) -> str:
    """Format from the magic bytes, else from the file name's extension (default CSV)."""
    if raw[:4] == b"PAR1":
        return "parquet"
    if raw[:2] == b"PK":
        return "npz"
    lower = (filename or "").lower()
    for fmt in FORMATS:
        if lower.endswith("." + fmt):
            return fmt
    return "csv"


def _decode_utf8(raw: bytes) -> str:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise Unprocessable(
            f"the file is not UTF-8 text: invalid byte at line {line} (byte offset {exc.start})",
            loc=["file", f"line {line}"],
        ) from None


def _check_csv_rows(text: str, sep: str = ",") -> list[str]:
    """Checks every row has the header's field count and the header names no column twice;
    returns the header (the first non-blank row)."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=sep)
    header = next(reader, None)
    while header is not None and not any(cell.strip() for cell in header):
        header = next(reader, None)
    if header is None:
        raise Unprocessable("the file is empty", loc=["file"])
    n_rows, sample = 0, []
    for row in reader:
        if not row or (len(row) == 1 and not row[0].strip()):
            continue  # blank line, as pandas skips it
        if len(row) != len(header):
            raise Unprocessable(
                f"line {reader.line_num} has {len(row)} fields but the header has {len(header)}",
                loc=["file", f"line {reader.line_num}"],
            )
        n_rows += 1
        if len(sample) < HEADER_SAMPLE_ROWS:
            sample.append(row)
    if n_rows == 0:
        raise Unprocessable("the file has a header row but no data rows", loc=["file", "line 2"])
    refuse_headerless(header, sample)
    duplicated = sorted(name for name, count in Counter(header).items() if count > 1)
    if duplicated:
        raise Unprocessable(f"duplicate column names in the header: {duplicated}", loc=["file", "header"])
    return header


def read_csv_frame(raw: bytes) -> pd.DataFrame:
    if not raw.strip():
        raise Unprocessable("the file is empty", loc=["file"])
    if b"\x00" in raw[:65536]:
        raise Unprocessable("the file is binary, not CSV text (it contains NUL bytes)", loc=["file"])
    text = _decode_utf8(raw)
    try:
        options = csv_options(text)
        _check_csv_rows(text, options["sep"])
        return pd.read_csv(io.StringIO(text), **options)
    except (ValueError, csv.Error, pd.errors.ParserError) as exc:
        raise Unprocessable(f"the CSV cannot be parsed: {exc}", loc=["file"]) from None


def _times_as_seconds(frame: pd.DataFrame) -> pd.DataFrame:
    """Date and timestamp columns become float seconds since 1970-01-01 UTC (a timestamp
    without a zone is taken as UTC), durations float seconds; missing ones NaN."""
    one_second = pd.Timedelta(seconds=1)
    timed = [name for name, dtype in frame.dtypes.items()  # by dtype first: a column lookup each is slow when wide
             if pd.api.types.is_datetime64_any_dtype(dtype) or pd.api.types.is_timedelta64_dtype(dtype)]
    for name in timed:
        column = frame[name]
        if isinstance(column.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_dtype(column.dtype):
            frame[name] = ((column - pd.Timestamp(0, tz=column.dt.tz)) / one_second).astype("float64")
        elif pd.api.types.is_timedelta64_dtype(column.dtype):
            frame[name] = (column / one_second).astype("float64")
    return frame


def read_parquet_frame(raw: bytes) -> pd.DataFrame:
    import pyarrow.parquet as pq  # noqa: PLC0415

    try:
        table = pq.read_table(io.BytesIO(raw))
        table.validate(full=True)  # e.g. invalid UTF-8 in a string column of a corrupt file
        frame = _times_as_seconds(table.to_pandas(date_as_object=False))
    except Exception as exc:  # pyarrow raises many types for corrupt files
        raise Unprocessable(f"the file is not a readable Parquet file: {exc}", loc=["file"]) from None
    if frame.shape[1] == 0:
        raise Unprocessable("the Parquet file has no columns", loc=["file"])
    if frame.shape[0] == 0:
        raise Unprocessable("the Parquet file has no rows", loc=["file"])
    for name in [name for name, dtype in frame.dtypes.items() if dtype == object]:
        column = frame[name]
        if not all(isinstance(v, str) or v is None for v in column):
            raise Unprocessable(f"column {name!r} holds nested or mixed values", loc=["file", str(name)])
    frame.columns = [str(c) for c in frame.columns]
    return frame


def _npz_header(archive: zipfile.ZipFile, name: str) -> tuple[tuple[int, ...], np.dtype]:
    member = name + ".npy"
    if member not in archive.namelist():
        raise Unprocessable(f"the .npz file has no array {name!r}", loc=["file", name])
    with archive.open(member) as handle:
        try:
            version = np.lib.format.read_magic(handle)
            if version == (1, 0):
                shape, _fortran, dtype = np.lib.format.read_array_header_1_0(handle)
            elif version == (2, 0):
                shape, _fortran, dtype = np.lib.format.read_array_header_2_0(handle)
            else:
                raise ValueError(f"unsupported .npy format version {version}")
        except ValueError as exc:
            raise Unprocessable(f"array {name!r} has an unreadable header: {exc}", loc=["file", name]) from None
    if dtype.hasobject:
        raise Unprocessable(f"array {name!r} holds Python objects ({dtype}); only numbers or strings", loc=["file", name])
    if dtype.kind not in "biufU":
        raise Unprocessable(f"array {name!r} has unsupported dtype {dtype}", loc=["file", name])
    return tuple(int(s) for s in shape), dtype


def read_npz_arrays(raw: bytes, *, max_array_bytes: int) -> tuple[np.ndarray, np.ndarray]:
    """X of shape (N, ...) and y of shape (N,) or (N, k); headers checked before reading."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(raw))
    except zipfile.BadZipFile:
        raise Unprocessable("the file is not a valid .npz (zip) archive", loc=["file"]) from None
    with archive:
        headers = {name: _npz_header(archive, name) for name in NPZ_ARRAYS}
    (x_shape, _), (y_shape, _) = headers["X"], headers["y"]
    if len(x_shape) < 2:
        raise Unprocessable(f"X must have shape (N, ...features), got {list(x_shape)}", loc=["file", "X"])
    if len(y_shape) not in (1, 2):
        raise Unprocessable(f"y must have shape (N,) or (N, k), got {list(y_shape)}", loc=["file", "y"])
    if x_shape[0] != y_shape[0]:
        raise Unprocessable(f"X has {x_shape[0]} rows but y has {y_shape[0]}", loc=["file", "y"])
    if x_shape[0] == 0:
        raise Unprocessable("X has no rows", loc=["file", "X"])
    for name, (shape, dtype) in headers.items():
        if int(np.prod(shape, dtype=np.int64)) * dtype.itemsize > max_array_bytes:
            raise Unprocessable(f"array {name!r} is larger than {max_array_bytes} bytes unpacked", loc=["file", name])
    try:
        with np.load(io.BytesIO(raw), allow_pickle=False) as data:
            return data["X"], data["y"]
    except (ValueError, OSError, zipfile.BadZipFile) as exc:
        raise Unprocessable(f"the .npz arrays cannot be read: {exc}", loc=["file"]) from None


def parse_dataset(raw: bytes, filename: str, *, max_rows: int, max_array_bytes: int) -> ParsedDataset:
    """Parse and profile an uploaded file; raises Unprocessable naming what is wrong."""
    if not raw:
        raise Unprocessable("the file is empty", loc=["file"])
    fmt = detect_format(filename, raw)
    if fmt == "npz":
        X, y = read_npz_arrays(raw, max_array_bytes=max_array_bytes)
        columns = [
            profile_values("X", X, str(X.dtype) if X.dtype.kind != "U" else "string"),
            profile_values("y", y, str(y.dtype) if y.dtype.kind != "U" else "string"),
        ]
        parsed = ParsedDataset("npz", int(X.shape[0]), columns, {"X": list(X.shape), "y": list(y.shape)})
    else:
        frame = read_csv_frame(raw) if fmt == "csv" else read_parquet_frame(raw)
        parsed = ParsedDataset(fmt, int(frame.shape[0]), profile_frame(frame))
    if parsed.n_rows > max_rows:
        raise Unprocessable(
            f"the dataset has {parsed.n_rows} rows; the limit (MAX_DATASET_ROWS) is {max_rows}", loc=["file"]
        )
    return parsed


def read_table(raw: bytes, fmt: str) -> pd.DataFrame:
    """The DataFrame of a stored CSV or Parquet dataset. Stored bytes passed every check at
    upload, so a CSV is parsed straight away (the row-by-row check is not repeated)."""
    if fmt == "csv":
        options = csv_options(csv_head(raw))
        return pd.read_csv(io.BytesIO(raw), encoding="utf-8-sig", **options)
    if fmt == "parquet":
        return read_parquet_frame(raw)
    raise ValueError(f"{fmt!r} is not a tabular format")
