"""Parsing (bps/dataset_files.py) and chunked storage (bps/datasets.py)."""
from __future__ import annotations

import io

import numpy as np
import pytest

from bps.dataset_files import detect_format, parse_dataset, read_npz_arrays
from bps.datasets import create_dataset, delete_dataset, get_dataset, load_dataset_bytes, read_limited
from bps.db import session_scope
from bps.problems import NotFound, PayloadTooLarge, Unprocessable
from bps.tenants import get_or_create_tenant


def _npz(**arrays) -> bytes:  # noqa: ANN003
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def test_detect_format_by_magic_then_extension() -> None:
    assert detect_format("x.csv", b"PAR1....") == "parquet"
    assert detect_format("x.csv", b"PK\x03\x04") == "npz"
    assert detect_format("x.parquet", b"abc") == "parquet" and detect_format("", b"a,b") == "csv"


def test_profile_of_numbers_strings_and_non_finite() -> None:
    parsed = parse_dataset(b"a,b\n1,x\n-inf,y\n,x\n3,z\n", "d.csv", max_rows=10, max_array_bytes=10**6)
    a, b = parsed.columns
    assert (a["missing"], a["non_finite"], a["min"], a["max"], a["mean"], a["n_unique"]) == (1, 2, 1, 3, 2, 3)
    assert b == {**b, "dtype": "string", "kind": "string", "missing": 0, "n_unique": 3, "min": None, "mean": None}


def test_row_limit() -> None:
    with pytest.raises(Unprocessable, match="MAX_DATASET_ROWS"):
        parse_dataset(b"a\n1\n2\n3\n", "d.csv", max_rows=2, max_array_bytes=10**6)


def test_npz_headers_are_checked_before_reading() -> None:
    raw = _npz(X=np.zeros((1000, 1000)), y=np.zeros(1000))  # compresses to almost nothing
    with pytest.raises(Unprocessable, match="larger than"):
        read_npz_arrays(raw, max_array_bytes=10**6)
    X, y = read_npz_arrays(_npz(X=np.ones((3, 2)), y=np.array(["a", "b", "a"])), max_array_bytes=10**6)
    assert X.shape == (3, 2) and y.tolist() == ["a", "b", "a"]


def test_read_limited_stops_past_the_limit() -> None:
    assert read_limited(io.BytesIO(b"x" * 10), limit=10) == b"x" * 10
    with pytest.raises(PayloadTooLarge):
        read_limited(io.BytesIO(b"x" * 11), limit=10)


def test_store_load_and_delete_in_chunks(settings) -> None:  # noqa: ANN001
    raw = b"a,b\n" + b"".join(f"{i},{i * 2}\n".encode() for i in range(500))
    with session_scope(settings.database_url) as session:
        tenant = get_or_create_tenant(session=session, tenant_name="t")
        dataset = create_dataset(session=session, tenant_id=tenant.id, raw=raw, filename="d.csv", name=None,
                                 chunk_bytes=1000, max_rows=10**6, max_array_bytes=10**6)
        assert len(dataset.chunks) == -(-len(raw) // 1000) and dataset.name == "d.csv"
    with session_scope(settings.database_url) as session:
        assert load_dataset_bytes(session=session, dataset_id=dataset.id) == raw
        with pytest.raises(NotFound):
            get_dataset(session=session, tenant_id="someone else", dataset_id=dataset.id)
        delete_dataset(session=session, tenant_id=tenant.id, dataset_id=dataset.id)
    with session_scope(settings.database_url) as session, pytest.raises(NotFound):
        load_dataset_bytes(session=session, dataset_id=dataset.id)


@pytest.mark.parametrize("raw", [b"a,a,y\n1,2,0\n", b"\n\na,b,a\n1,2,0\n"])
def test_a_header_naming_a_column_twice_is_refused_even_after_blank_lines(raw: bytes) -> None:
    from bps.dataset_files import read_csv_frame

    with pytest.raises(Unprocessable) as info:
        read_csv_frame(raw)
    assert info.value.detail == "duplicate column names in the header: ['a']"


@pytest.mark.parametrize(("raw", "sep", "first_row"), [
    (b"a;b;label\n1;2.5;x\n3;4;y\n", ";", [1, 2.5, "x"]),
    (b"a;b;label\n1,5;2;x\n3;-4,25;y\n", ";", [1.5, 2, "x"]),  # decimal commas
    (b"a\tb\tlabel\n1\t2.5\tx\n3\t4\ty\n", "\t", [1, 2.5, "x"]),
    (b"a|b|label\n1|2.5|x\n3|4|y\n", "|", [1, 2.5, "x"]),
    (b'a,"b;c",label\n1,2.5,x\n3,4,y\n', ",", [1, 2.5, "x"]),  # a comma header keeps the comma
])
def test_csv_separator_is_detected_at_upload_and_when_read_for_training(raw: bytes, sep: str, first_row) -> None:  # noqa: ANN001
    from bps.csv_text import csv_options
    from bps.dataset_files import read_csv_frame, read_table

    assert csv_options(raw.decode())["sep"] == sep
    frame = read_csv_frame(raw)
    assert len(frame.columns) == 3 and frame.iloc[0].tolist() == first_row
    assert read_table(raw, "csv").equals(frame)
    parsed = parse_dataset(raw, "d.csv", max_rows=10, max_array_bytes=10**6)
    assert [c["kind"] for c in parsed.columns][:2] != ["string", "string"]


@pytest.mark.parametrize("raw", [b"5.1,3.5,setosa\n4.9,3.0,setosa\n", b"1.5,2\n3,4\n", b"5,1;3,5;a\n4,9;3,0;b\n"])
def test_a_csv_whose_first_row_is_data_is_refused(raw: bytes) -> None:
    with pytest.raises(Unprocessable, match="looks like data, not a header") as excinfo:
        parse_dataset(raw, "d.csv", max_rows=10, max_array_bytes=10**6)
    assert excinfo.value.errors[0]["loc"] == ["file", "line 1"]


@pytest.mark.parametrize("raw", [b"0,1,2\n1.5,2,3\n", b"1,2,3\n4,5,6\n", b"x,2019,label\n1,2,a\n",
                                 b"a,b\n1,2\n", b"name,label\nbob,1\n"])
def test_headers_that_are_column_positions_or_names_are_headers(raw: bytes) -> None:
    parsed = parse_dataset(raw, "d.csv", max_rows=10, max_array_bytes=10**6)
    assert [c["name"] for c in parsed.columns] == raw.decode().splitlines()[0].split(",")


def test_parquet_dates_times_and_durations_become_seconds() -> None:
    import datetime as dt

    import pandas as pd

    from bps.dataset_files import read_parquet_frame

    frame = pd.DataFrame({
        "naive": pd.to_datetime(["1970-01-02T00:00:00", None]),
        "aware": pd.to_datetime(["2024-01-01T01:00:00+01:00", "2024-01-01T01:00:01+01:00"]),
        "day": [dt.date(1970, 1, 3), None], "wait": pd.to_timedelta([90, None], unit="s"), "y": [1, 2]})
    buffer = io.BytesIO()
    frame.to_parquet(buffer)
    read = read_parquet_frame(buffer.getvalue())
    assert read["naive"].tolist()[0] == 86400.0 and np.isnan(read["naive"].tolist()[1])
    assert read["aware"].tolist() == [1704067200.0, 1704067201.0]
    assert read["day"].tolist()[0] == 2 * 86400.0 and read["wait"].tolist()[0] == 90.0
    parsed = parse_dataset(buffer.getvalue(), "d.parquet", max_rows=10, max_array_bytes=10**6)
    assert {c["name"]: c["dtype"] for c in parsed.columns} == {
        "naive": "float64", "aware": "float64", "day": "float64", "wait": "float64", "y": "int64"}


def test_a_wide_semicolon_csv_with_decimal_commas_is_read_whole() -> None:
    from bps.dataset_files import read_csv_frame, read_table

    names = [f"feature_{i}" for i in range(8000)]  # a header row longer than the sniffed sample
    raw = (";".join(names) + "\n" + ";".join(["1,5"] * len(names)) + "\n").encode()
    frame = read_csv_frame(raw)
    assert frame.shape == (1, 8000) and frame.iloc[0, -1] == 1.5
    assert read_table(raw, "csv").equals(frame)


def test_a_header_wider_than_the_csv_modules_field_limit_parses() -> None:
    """1 x 20,000 columns with 12-character names: a 260 KB header row."""
    names = [f"feature_{i:05d}" for i in range(20_000)]
    raw = (",".join(names) + "\n" + ",".join(str(i % 7) for i in range(20_000)) + "\n").encode()
    parsed = parse_dataset(raw, "wide.csv", max_rows=10, max_array_bytes=10**6)
    assert [c["name"] for c in parsed.columns] == names and parsed.n_rows == 1
    assert parsed.columns[-1] == {**parsed.columns[-1], "min": float(19_999 % 7), "n_unique": 1}
