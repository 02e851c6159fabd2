"""Fitting a Preprocessor on a stored dataset and producing the engine's training arrays:
`prepare_training_data` is what the worker calls. See bps/preprocessor.py for the transform."""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from bps.dataset_files import read_npz_arrays, read_table
from bps.preprocessor import (
    IMPUTE_STRATEGIES,
    UNBOUNDED_ARRAY_BYTES,
    Preprocessor,
    fill_value,
    python_scalar,
    target_mode,
)
from bps.problems import Unprocessable
from bps.input_range import check_inputs_fit, dtype_limit, first_out_of_range
from bps.splits import split_problem, split_rows

__all__ = ["IMPUTE_STRATEGIES", "UNBOUNDED_ARRAY_BYTES", "Preprocessor", "fit_arrays", "fit_tabular",
           "prepare_training_data", "target_mode"]

# ---- fitting -------------------------------------------------------------------------
def _fit_classes(values: np.ndarray, mode: str, name: str) -> list[Any] | None:
    """Sorted distinct labels, as uploaded. Binary 0/1 multi-column .npz targets have none."""
    if mode == "binary" and values.ndim == 2 and values.shape[1] > 1:
        if not np.isin(values, (0, 1)).all():
            raise Unprocessable(f"binary_cross_entropy needs 0/1 targets in {name!r}", loc=[name])
        return None
    flat = values.reshape(len(values)) if values.ndim == 2 and values.shape[1] == 1 else values
    if flat.ndim != 1:
        raise Unprocessable(f"{mode} labels must be one column; {name!r} has shape {list(values.shape)}", loc=[name])
    if flat.dtype.kind == "f":
        finite = flat[np.isfinite(flat)]
        if finite.size != flat.size or not np.all(finite == np.round(finite)):
            raise Unprocessable(
                f"target {name!r} holds non-integer or missing numbers; a classification loss needs "
                "discrete labels (use mse/mae/huber for regression)",
                loc=[name],
            )
    classes = sorted({python_scalar(v) for v in pd.unique(flat)})  # distinct first: one Python call per label
    if mode == "binary" and len(classes) > 2:
        raise Unprocessable(
            f"binary_cross_entropy needs two classes in {name!r}; found {len(classes)} (use cross_entropy)", loc=[name]
        )
    return classes


def _numeric_target(values: np.ndarray, name: str) -> None:
    if values.dtype.kind not in "biuf":
        raise Unprocessable(f"target {name!r} is not numeric; {name!r} needs a classification loss", loc=[name])
    if not np.isfinite(values.astype(np.float64)).all():
        raise Unprocessable(f"target {name!r} has missing or non-finite values", loc=[name])


def _feature_spec(name: str, column: pd.Series, impute: str | None, fit_rows: np.ndarray | None) -> dict[str, Any]:
    """Numeric: mean, std and fill value from the rows `fit_rows` (the training rows, None: all;
    the validation rows must not leak into them). Categorical: the categories of every row, so
    the one-hot width is the one the job was validated with."""
    if pd.api.types.is_numeric_dtype(column.dtype):
        values = column.to_numpy(dtype=np.float64, na_value=np.nan)
        values = values if fit_rows is None else values[fit_rows]
        finite = values[np.isfinite(values)]
        std = float(finite.std()) if finite.size else 1.0
        return {
            "name": name,
            "kind": "numeric",
            "mean": float(finite.mean()) if finite.size else 0.0,
            "std": std if std > 1e-12 else 1.0,
            "fill": fill_value(values, impute),
            "boolean": bool(pd.api.types.is_bool_dtype(column.dtype)),  # only then is true a value
        }
    categories = sorted({str(v) for v in column.dropna()})
    return {"name": name, "kind": "categorical", "categories": categories}


def fit_tabular(
    frame: pd.DataFrame, *, target: str, features: list[str] | None, input_shape: list[int] | None, mode: str,
    impute: str | None, fit_rows: np.ndarray | None = None,
) -> Preprocessor:
    if target not in frame.columns:
        raise Unprocessable(f"target column {target!r} is not in the dataset", loc=["target"])
    names = list(features) if features else [str(c) for c in frame.columns if c != target]
    unknown = [n for n in names if n not in frame.columns]
    if unknown:
        raise Unprocessable(f"feature column(s) {unknown} are not in the dataset", loc=["features"])
    specs = [_feature_spec(n, frame[n], impute, fit_rows) for n in names]
    width = sum(1 if s["kind"] == "numeric" else len(s["categories"]) for s in specs)
    shape = list(input_shape) if input_shape else [width]
    if int(np.prod(shape)) != width:
        raise Unprocessable(f"input_shape {shape} holds {int(np.prod(shape))} values; the features give {width}",
                            loc=["input_shape"])
    labels = frame[target].to_numpy()
    if mode == "regression":
        _numeric_target(labels, target)
        classes, n_outputs = None, 1
    else:
        if frame[target].isna().any():
            raise Unprocessable(f"target {target!r} has missing values", loc=[target])
        classes = _fit_classes(labels, mode, target)
        n_outputs = 1 if mode == "binary" else len(classes or [])
    return Preprocessor("tabular", mode, shape, names, specs, target, classes, n_outputs, impute)


def fit_arrays(X: np.ndarray, y: np.ndarray, *, input_shape: list[int] | None, mode: str,
               impute: str | None, fit_rows: np.ndarray | None = None) -> Preprocessor:
    shape = list(input_shape) if input_shape else [int(s) for s in X.shape[1:]]
    if int(np.prod(shape)) != int(np.prod(X.shape[1:])):
        raise Unprocessable(f"input_shape {shape} does not match X rows of shape {list(X.shape[1:])}",
                            loc=["input_shape"])
    fitted = X if fit_rows is None else X[fit_rows]
    fill = fill_value(np.asarray(fitted, dtype=np.float64).ravel(), impute) if impute else None
    if mode == "regression":
        _numeric_target(y, "y")
        classes, n_outputs = None, 1 if y.ndim == 1 else int(y.shape[1])
    else:
        classes = _fit_classes(y, mode, "y")
        if classes is None:
            n_outputs = int(y.shape[1])
        else:
            n_outputs = 1 if mode == "binary" else len(classes)
    return Preprocessor("array", mode, shape, [], [], None, classes, n_outputs, impute, fill)


def training_split(labels: Any, mode: str, *, validation_split: float, validation: str, seed: int,
                   n_rows: int) -> np.ndarray:
    """The training rows (the engine's split; bps.splits): stratified by label for classification
    of one label column. 422 when the split leaves no training or validation row."""
    problem = split_problem(n_rows, validation_split)
    if problem:
        raise Unprocessable(problem, loc=["spec", "validation_split"])
    labels = np.asarray(labels)
    one_column = labels.ndim == 1 or (labels.ndim == 2 and labels.shape[1] == 1)
    stratify = labels.reshape(n_rows) if mode != "regression" and one_column else None
    train_rows, _ = split_rows(n_rows, validation_split, mode=validation, seed=seed, labels=stratify)
    return train_rows


def check_training_range(X: np.ndarray, y: np.ndarray, prep: Preprocessor, dtype: str | None) -> None:
    """422 naming the row and column of the first value beyond the model's dtype (X after
    standardisation, and a regression target)."""
    if dtype is None:
        return
    check_inputs_fit(X, prep, dtype, ["dataset"])
    found = first_out_of_range(y, dtype_limit(dtype)) if prep.mode == "regression" else None
    if found is not None:
        name = prep.target or "y"
        raise Unprocessable(f"row {found[0]}, target {name!r}: the value is too large for a {dtype} model "
                            f"(±{dtype_limit(dtype):.3g}): rescale the target or use \"dtype\": \"float64\"",
                            loc=["dataset", found[0], name])


def prepare_training_data(
    raw: bytes, fmt: str, *, target: str | None, features: list[str] | None, input_shape: list[int] | None,
    task: str, impute: str | None = None, validation_split: float = 0.0, validation: str = "shuffle",
    seed: int = 0, dtype: str | None = None,
) -> tuple[np.ndarray, np.ndarray, Preprocessor]:
    """Stored dataset bytes -> (X float64 (N, *input_shape), y, fitted Preprocessor).

    Statistics (standardisation, imputation) are fitted on the training rows only: the rows
    the engine trains on for the same `validation_split`, `validation` and `seed` (bps.splits).
    `task` is the spec's loss name (or "classification" = cross_entropy / "regression");
    y follows the module docstring. `dtype`: the model's; values beyond it are refused.
    Raises Unprocessable naming the column (and row) at fault.
    """
    if impute is not None and impute not in IMPUTE_STRATEGIES:
        raise Unprocessable(f"impute must be one of {list(IMPUTE_STRATEGIES)}", loc=["impute"])
    mode = target_mode(task)
    split = {"validation_split": validation_split, "validation": validation, "seed": seed}
    if fmt == "npz":
        X_raw, y_raw = read_npz_arrays(raw, max_array_bytes=UNBOUNDED_ARRAY_BYTES)
        fit_rows = training_split(y_raw, mode, n_rows=len(X_raw), **split)
        prep = fit_arrays(X_raw, y_raw, input_shape=input_shape, mode=mode, impute=impute, fit_rows=fit_rows)
        X, y = prep.transform_arrays(X_raw), prep.encode_labels(y_raw)
    else:
        if not target:
            raise Unprocessable("a CSV or Parquet dataset needs \"target\": the label column", loc=["target"])
        frame = read_table(raw, fmt)
        if target not in frame.columns:
            raise Unprocessable(f"target column {target!r} is not in the dataset", loc=["target"])
        fit_rows = training_split(frame[target].to_numpy(), mode, n_rows=len(frame), **split)
        prep = fit_tabular(frame, target=target, features=features, input_shape=input_shape, mode=mode,
                           impute=impute, fit_rows=fit_rows)
        X, y = prep.transform_frame(frame), prep.encode_labels(frame[target])
    check_training_range(X, y, prep, dtype)
    return X, y, prep
