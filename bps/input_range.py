"""Finite numbers a model cannot hold: a value beyond its dtype's range (1e39 is finite in
JSON and float64 but infinite in float32) would turn into inf/NaN inside the network, and a
prediction or a training run would answer nulls. They are refused with a 422 naming the row and
the column, at prediction and at training."""
from __future__ import annotations

from typing import Any

import numpy as np

from bps.preprocessor import Preprocessor
from bps.problems import Unprocessable


def dtype_limit(dtype: Any) -> float:
    """The largest finite magnitude of `dtype` (float32: 3.4e38)."""
    return float(np.finfo(np.dtype(dtype)).max)


def first_out_of_range(values: np.ndarray, limit: float) -> tuple[int, int] | None:
    """(row, flat column) of the first value that is not finite or beyond ±limit, else None."""
    flat = values.reshape(len(values), -1)
    bad = ~(np.abs(flat) <= limit)  # NaN compares False: caught too
    if not bad.any():
        return None
    row, column = divmod(int(np.argmax(bad)), flat.shape[1])
    return row, column


def column_name(prep: Preprocessor, column: int) -> str:
    """The name of the model's flat input `column`: its feature (a one-hot column names its
    feature); for an .npz model the index into input_shape, e.g. "X[0, 3, 4]"."""
    if prep.source == "array":
        return f"X[{', '.join(str(int(i)) for i in np.unravel_index(column, prep.input_shape))}]"
    return str(_encoder_at(prep, column)["name"])


def raw_value(prep: Preprocessor, column: int, value: float) -> float:
    """The value as sent, before standardisation (numeric tabular features)."""
    if prep.source == "tabular":
        encoder = _encoder_at(prep, column)
        if encoder["kind"] == "numeric":
            return value * encoder["std"] + encoder["mean"]
    return value


def _encoder_at(prep: Preprocessor, column: int) -> dict[str, Any]:
    offset = 0
    for encoder in prep.encoders:
        offset += 1 if encoder["kind"] == "numeric" else len(encoder["categories"])
        if column < offset:
            return encoder
    raise IndexError(column)


def check_inputs_fit(X: np.ndarray, prep: Preprocessor, dtype: Any, loc: list[Any]) -> None:
    """422 when a (standardised) input is beyond `dtype`'s range, naming its row and column."""
    limit = dtype_limit(dtype)
    found = first_out_of_range(X, limit)
    if found is None:
        return
    row, column = found
    name = column_name(prep, column)
    value = raw_value(prep, column, float(X.reshape(len(X), -1)[row, column]))
    shown = f"{value:.4g}" if np.isfinite(value) else "the value"
    raise Unprocessable(
        f"row {row}, column {name!r}: {shown} is too large for this {np.dtype(dtype).name} model "
        f"(its inputs, standardised, must stay within ±{limit:.3g}); send values of a realistic magnitude",
        loc=[*loc, row, name])


def first_non_finite_output(outputs: np.ndarray, X: np.ndarray, prep: Preprocessor) -> tuple[int, str, float] | None:
    """(row, name of its largest input column, that input as sent) of the first row whose output
    is not finite (its inputs overflowed inside the network), else None."""
    bad_rows = ~np.isfinite(outputs.reshape(len(outputs), -1)).all(axis=1)
    if not bad_rows.any():
        return None
    row = int(np.argmax(bad_rows))
    flat = X.reshape(len(X), -1)[row]
    if not flat.size:
        return row, "?", float("nan")
    column = int(np.argmax(np.abs(flat)))
    return row, column_name(prep, column), raw_value(prep, column, float(flat[column]))


def check_outputs_finite(outputs: np.ndarray, X: np.ndarray, prep: Preprocessor, loc: list[Any]) -> None:
    """422 when the network's output for a row is not finite: names the row and its largest input column."""
    found = first_non_finite_output(outputs, X, prep)
    if found is None:
        return
    row, name, value = found
    raise Unprocessable(
        f"row {row}: the model's output overflows (inf/NaN) for this row; its largest input is column "
        f"{name!r} ({value:.4g}): send values of a realistic magnitude", loc=[*loc, row, name])
