"""Property tests of upload parsing (bps.dataset_files) and of the training arrays built from a
parsed upload (bps.preprocessing): for any input the outcome is either a finite, rectangular
profile/array within the limits, or a ProblemError naming what is wrong — nothing else."""
from __future__ import annotations

import io
import math
import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from bps.dataset_files import ParsedDataset, parse_dataset
from bps.preprocessing import prepare_training_data
from bps.problems import ProblemError

MAX_ROWS = 40
MAX_ARRAY_BYTES = 64 * 1024
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def parse_or_problem(raw: bytes, filename: str) -> ParsedDataset | None:
    """The parsed dataset, or None after a ProblemError with a non-empty message and a 4xx status."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return parse_dataset(raw, filename, max_rows=MAX_ROWS, max_array_bytes=MAX_ARRAY_BYTES)
    except ProblemError as exc:
        assert 400 <= exc.status < 500 and exc.detail and exc.errors
        event("refused with a problem")
        return None


def assert_sane_profile(parsed: ParsedDataset) -> None:
    event(f"parsed as {parsed.format}")
    assert parsed.format in ("csv", "parquet", "npz")
    assert 1 <= parsed.n_rows <= MAX_ROWS
    names = [column["name"] for column in parsed.columns]
    assert names and len(set(names)) == len(names)
    for column in parsed.columns:
        assert 0 <= column["missing"] <= column["non_finite"] if column["kind"] == "numeric" else True
        assert 0 <= column["n_unique"] <= parsed.n_rows * (int(np.prod(parsed.shapes["X"][1:]))
                                                            if parsed.shapes and column["name"] == "X" else 1) \
            or column["name"] == "y"
        for stat in ("min", "max", "mean", "std"):
            assert column[stat] is None or math.isfinite(column[stat]), (column["name"], stat, column[stat])
    if parsed.format == "npz":
        assert parsed.shapes["X"][0] == parsed.shapes["y"][0] == parsed.n_rows


def assert_training_arrays_or_problem(raw: bytes, parsed: ParsedDataset, loss: str) -> None:
    """Training arrays from a parsed upload: finite float X with one row per dataset row, or a ProblemError."""
    target = None if parsed.format == "npz" else parsed.columns[-1]["name"]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            X, y, prep = prepare_training_data(raw, parsed.format, target=target, features=None, input_shape=None,
                                               task=loss, impute="mean")
    except ProblemError as exc:
        assert 400 <= exc.status < 500 and exc.detail
        event("training arrays refused with a problem")
        return
    event("training arrays built")
    assert X.dtype == np.float64 and X.shape[0] == parsed.n_rows == len(y)
    assert np.isfinite(X).all()
    if loss == "mse":
        assert np.isfinite(np.asarray(y, dtype=np.float64)).all()


# ---- raw bytes -----------------------------------------------------------------------------
@FUZZ
@given(raw=st.binary(max_size=2048), filename=st.sampled_from(["d.csv", "d.npz", "d.parquet", "d", ""]))
def test_random_bytes_parse_or_raise_a_problem(raw: bytes, filename: str) -> None:
    parsed = parse_or_problem(raw, filename)
    if parsed is not None:
        assert_sane_profile(parsed)


# ---- CSV-ish text ------------------------------------------------------------------------
CELLS = st.one_of(
    st.integers(-10**20, 10**20).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["", "nan", "NaN", "inf", "-inf", "Infinity", "NA", "null", "1e309", "-0", "0x10", "1,5",
                     '"quoted, comma"', '"unterminated', '""', "é", "日本", "\u202e", " ", "\t", "true", "False"]),
    st.text(max_size=6),
)


@st.composite
def csv_texts(draw) -> str:  # noqa: ANN001
    width = draw(st.integers(1, 5))
    header = draw(st.lists(st.one_of(st.sampled_from(["a", "b", "label", "a", ""]), st.text(max_size=4)),
                           min_size=width, max_size=width))
    ragged = draw(st.integers(0, 4)) == 0
    lengths = st.integers(max(0, width - 1), width + 1) if ragged else st.just(width)
    rows = draw(st.lists(lengths.flatmap(lambda n: st.lists(CELLS, min_size=n, max_size=n)), max_size=12))
    line_end = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    return line_end.join(",".join(row) for row in [header, *rows]) + draw(st.sampled_from(["", line_end]))


@FUZZ
@given(text=csv_texts(), loss=st.sampled_from(["mse", "cross_entropy"]))
def test_csv_text_parses_to_a_sane_profile_or_a_problem(text: str, loss: str) -> None:
    raw = text.encode("utf-8")
    parsed = parse_or_problem(raw, "data.csv")
    if parsed is not None:
        assert parsed.format == "csv"
        assert_sane_profile(parsed)
        assert_training_arrays_or_problem(raw, parsed, loss)


# ---- Parquet -----------------------------------------------------------------------------
COLUMN_VALUES = st.one_of(
    st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=1, max_size=8),
    st.lists(st.integers(-2**63, 2**63 - 1), min_size=1, max_size=8),
    st.lists(st.one_of(st.none(), st.text(max_size=5)), min_size=1, max_size=8),
    st.lists(st.booleans(), min_size=1, max_size=8),
    st.lists(st.one_of(st.integers(-5, 5), st.text(max_size=3)), min_size=1, max_size=8),
    st.lists(st.lists(st.integers(0, 3), max_size=3), min_size=1, max_size=8),
)


def parquet_bytes(columns: dict[str, list]) -> bytes | None:
    rows = min(len(values) for values in columns.values())
    try:
        frame = pd.DataFrame({name: values[:rows] for name, values in columns.items()})
        buffer = io.BytesIO()
        frame.to_parquet(buffer, engine="pyarrow", index=False)
    except Exception:  # noqa: BLE001  (pandas/pyarrow refuse some mixes: then there is no file to test)
        return None
    return buffer.getvalue()


@FUZZ
@given(columns=st.dictionaries(st.text(min_size=1, max_size=4), COLUMN_VALUES, min_size=1, max_size=4),
       flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=3),
       loss=st.sampled_from(["mse", "cross_entropy", "binary_cross_entropy"]))
def test_parquet_parses_to_a_sane_profile_or_a_problem(columns, flips, loss) -> None:  # noqa: ANN001
    raw = parquet_bytes(columns)
    assume(raw is not None)
    corrupted = bytearray(raw)
    for position, value in flips:
        corrupted[position % len(corrupted)] = value
    parsed = parse_or_problem(bytes(corrupted), "data.parquet")
    if parsed is not None:
        assert_sane_profile(parsed)
        assert_training_arrays_or_problem(bytes(corrupted), parsed, loss)


# ---- .npz --------------------------------------------------------------------------------
DTYPES = ["float32", "float64", "int8", "int64", "uint8", "bool", "complex64", "<U3", "S2", "datetime64[s]",
          "float16", "object"]


def _array(draw, shape: tuple[int, ...], dtype: str) -> np.ndarray:  # noqa: ANN001
    values = draw(st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), min_size=1, max_size=4))
    source = np.resize(np.asarray(values, dtype=np.float64), shape) if shape else np.float64(values[0])
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return np.asarray(source).astype(dtype)


@st.composite
def npz_payloads(draw) -> bytes:  # noqa: ANN001
    """Mostly well-formed X (N, ...) and y (N,) of odd dtypes and values; else any names and shapes."""
    arrays = {}
    if draw(st.booleans()):
        n = draw(st.integers(1, 6))
        x_shape = (n, *draw(st.lists(st.integers(1, 3), min_size=1, max_size=3)))
        arrays["X"] = _array(draw, x_shape, draw(st.sampled_from(DTYPES)))
        arrays["y"] = _array(draw, (n,) if draw(st.booleans()) else (n, draw(st.integers(1, 3))),
                             draw(st.sampled_from(DTYPES)))
    else:
        for name in draw(st.lists(st.sampled_from(["X", "y", "Z", "x"]), max_size=3, unique=True)):
            shape = tuple(draw(st.lists(st.integers(0, 6), max_size=4)))
            arrays[name] = _array(draw, shape, draw(st.sampled_from(DTYPES)))
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    raw = buffer.getvalue()
    cut = draw(st.one_of(st.none(), st.none(), st.integers(0, len(raw))))
    return raw if cut is None else raw[:cut]


@FUZZ
@given(raw=npz_payloads(), loss=st.sampled_from(["mse", "cross_entropy"]))
def test_npz_parses_to_a_sane_profile_or_a_problem(raw: bytes, loss: str) -> None:
    parsed = parse_or_problem(raw, "data.npz")
    if parsed is not None:
        assert parsed.format == "npz"
        assert_sane_profile(parsed)
        assert_training_arrays_or_problem(raw, parsed, loss)


def test_an_object_array_is_refused_without_unpickling() -> None:
    buffer = io.BytesIO()
    np.savez(buffer, X=np.array([[{"a": 1}]], dtype=object), y=np.array([1]))
    with pytest.raises(ProblemError, match="Python objects"):
        parse_dataset(buffer.getvalue(), "d.npz", max_rows=MAX_ROWS, max_array_bytes=MAX_ARRAY_BYTES)
