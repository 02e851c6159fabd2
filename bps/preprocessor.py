"""Turning a stored dataset into training arrays, and the same transform at prediction.

`Preprocessor` is saved with the model as JSON (`to_json()` -> dict, `from_json(dict|str)`):
numeric features standardised ((x - mean) / std, std 0 -> 1), string features one-hot
(unknown category -> all zeros), labels mapped to class indices and back (`classes` hold
the labels as uploaded: strings stay strings, integers stay integers).

Target modes, from the spec's loss: "multiclass" (cross_entropy: y int class indices (N,)),
"binary" (binary_cross_entropy: y float 0/1 (N, 1), or (N, k) for an .npz multi-label y),
"regression" (mse/mae/huber: y float (N, k), k target columns; (N, 1) for one column).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from bps.numbers import finite_or_none
from bps.problems import Unprocessable

CLASSIFICATION_LOSSES = {"cross_entropy": "multiclass", "binary_cross_entropy": "binary"}
REGRESSION_LOSSES = ("mse", "mae", "huber")
IMPUTE_STRATEGIES = ("mean", "median", "zero")
UNBOUNDED_ARRAY_BYTES = 1 << 62


def target_mode(task: str) -> str:
    """"multiclass" | "binary" | "regression" from a loss name (or "classification"/"regression")."""
    if task in CLASSIFICATION_LOSSES:
        return CLASSIFICATION_LOSSES[task]
    if task in ("classification", "multiclass"):
        return "multiclass"
    if task in ("binary", "regression"):
        return task
    if task in REGRESSION_LOSSES:
        return "regression"
    raise ValueError(f"unknown loss or task {task!r}")


def python_scalar(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def fill_value(values: np.ndarray, impute: str | None) -> float | None:
    finite = values[np.isfinite(values)]
    if impute is None:
        return None
    if impute == "zero" or finite.size == 0:
        return 0.0
    return float(np.median(finite) if impute == "median" else finite.mean())


# Said at prediction as at training: a model fills missing values only when its job had "impute".
UNFILLED = "clean the data, or train with \"impute\": \"mean\" | \"median\" | \"zero\" (a model trained so fills them)"


def _boolean_rows(column: pd.Series) -> np.ndarray:
    """Which values of `column` are booleans (JSON true/false, a boolean column)."""
    if pd.api.types.is_bool_dtype(column.dtype):
        return np.ones(len(column), dtype=bool)
    if column.dtype != object:
        return np.zeros(len(column), dtype=bool)
    return np.fromiter((isinstance(v, (bool, np.bool_)) for v in column), dtype=bool, count=len(column))


def first_boolean(value: Any, at: tuple[int, ...] = ()) -> tuple[int, ...] | None:
    """The index path of the first boolean in nested lists, None when there is none."""
    if isinstance(value, (bool, np.bool_)):
        return at
    if isinstance(value, list):
        types = set(map(type, value))  # a list of plain numbers is passed over at C speed
        if list not in types and bool not in types and np.bool_ not in types:
            return None
        for i, item in enumerate(value):
            found = first_boolean(item, (*at, i))
            if found is not None:
                return found
    return None


def _refuse_boolean(at: tuple[int, ...]) -> None:
    raise Unprocessable(f"instances{''.join(f'[{i}]' for i in at)} is a boolean where a number belongs: "
                        "send a number", loc=["instances", *at])


@dataclass
class Preprocessor:
    source: str  # "tabular" (CSV/Parquet) | "array" (.npz)
    mode: str  # "multiclass" | "binary" | "regression"
    input_shape: list[int]
    features: list[str] = field(default_factory=list)  # tabular: feature column names, in order
    encoders: list[dict[str, Any]] = field(default_factory=list)  # tabular: one per feature
    target: str | None = None
    classes: list[Any] | None = None
    n_outputs: int = 1
    impute: str | None = None
    array_fill: float | None = None  # .npz imputation value

    # ---- persistence -------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_json(cls, data: dict[str, Any] | str) -> Preprocessor:
        return cls(**(json.loads(data) if isinstance(data, str) else data))

    @property
    def feature_names(self) -> list[str]:
        return list(self.features)

    @property
    def task(self) -> str:
        """"classification" | "regression", as Model.task."""
        return "regression" if self.mode == "regression" else "classification"

    @property
    def width(self) -> int:
        return int(np.prod(self.input_shape))

    # ---- features ----------------------------------------------------------------
    def _numeric_column(self, spec: dict[str, Any], column: pd.Series) -> np.ndarray:
        if spec.get("boolean") is False:  # a model from before the flag reads true as 1, as it did
            booleans = _boolean_rows(column)
            if booleans.any():
                row = int(np.argmax(booleans))
                raise Unprocessable(f"column {spec['name']!r} takes numbers (the model was trained on numbers); "
                                    f"row {row} holds {str(bool(column.iloc[row])).lower()}, a boolean", loc=[spec["name"]])
        values = pd.to_numeric(column, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        bad_text = column.notna().to_numpy() & np.isnan(values)
        if bad_text.any():
            row = int(np.argmax(bad_text))
            raise Unprocessable(
                f"column {spec['name']!r} must be numeric; row {row} holds {column.iloc[row]!r}", loc=[spec["name"]]
            )
        missing = ~np.isfinite(values)
        if missing.any():
            if spec.get("fill") is None:
                raise Unprocessable(
                    f"column {spec['name']!r} has {int(missing.sum())} missing or non-finite value(s) "
                    f"(first at row {int(np.argmax(missing))}): {UNFILLED}",
                    loc=[spec["name"]],
                )
            values = np.where(missing, spec["fill"], values)
        with np.errstate(over="ignore"):  # an overflow is refused by bps.input_range, naming the row
            return (values - spec["mean"]) / spec["std"]

    def _categorical_column(self, spec: dict[str, Any], column: pd.Series) -> np.ndarray:
        if column.isna().any() and self.impute is None:
            row = int(np.argmax(column.isna().to_numpy()))
            raise Unprocessable(
                f"column {spec['name']!r} has missing values (first at row {row}): clean the data, or train with "
                "\"impute\" (a model trained so encodes them as no category)",
                loc=[spec["name"]],
            )
        text = column.astype(object).where(column.notna(), None).map(lambda v: None if v is None else str(v))
        categories = spec["categories"]
        index = {c: i for i, c in enumerate(categories)}
        out = np.zeros((len(column), len(categories)))
        for row, value in enumerate(text):
            position = index.get(value)
            if position is not None:
                out[row, position] = 1.0
        return out

    def transform_frame(self, frame: pd.DataFrame) -> np.ndarray:
        """Feature columns of `frame` -> float64 (N, *input_shape)."""
        missing = [name for name in self.feature_names if name not in frame.columns]
        if missing:
            raise Unprocessable(f"missing feature column(s): {missing}", loc=[missing[0]])
        blocks = []
        for spec in self.encoders:
            column = frame[spec["name"]]
            if spec["kind"] == "numeric":
                blocks.append(self._numeric_column(spec, column)[:, None])
            else:
                blocks.append(self._categorical_column(spec, column))
        flat = np.concatenate(blocks, axis=1) if blocks else np.zeros((len(frame), 0))
        return flat.reshape((len(frame), *self.input_shape))

    def transform_arrays(self, X: np.ndarray) -> np.ndarray:
        """.npz-style X (N, *input_shape) or (N, prod(input_shape)) -> float64 (N, *input_shape)."""
        X = np.asarray(X, dtype=np.float64)
        if X.ndim < 2 or int(np.prod(X.shape[1:])) != self.width:
            raise Unprocessable(
                f"instances must have shape (n, {', '.join(map(str, self.input_shape))}) "
                f"or (n, {self.width}); got {list(X.shape)}",
                loc=["instances"],
            )
        X = X.reshape((X.shape[0], *self.input_shape))
        missing = ~np.isfinite(X)
        if missing.any():
            if self.array_fill is None:
                raise Unprocessable(
                    f"X has {int(missing.sum())} missing or non-finite value(s): {UNFILLED}",
                    loc=["X"],
                )
            X = np.where(missing, self.array_fill, X)
        return X

    def transform_instances(self, instances: list[Any]) -> np.ndarray:
        """Rows of raw feature values in feature order, or nested arrays of input_shape."""
        if self.source == "array":
            if (at := first_boolean(instances)) is not None:
                _refuse_boolean(at)
            try:
                return self.transform_arrays(np.asarray(instances, dtype=np.float64))
            except (TypeError, ValueError):
                raise Unprocessable("instances must be numeric nested arrays", loc=["instances"]) from None
        n_features = len(self.features)
        if all(isinstance(row, list) and len(row) == n_features for row in instances) and not (
            n_features == 1 and self.width != 1
        ):
            flat_rows = instances
        else:
            # With a boolean inside, the values go on as they are (objects), so that each column's
            # own rule (booleans only where it was trained on them) decides, as for flat rows;
            # their float64 view only checks that they are numbers in a regular shape.
            has_boolean = first_boolean(instances) is not None
            try:
                values = np.asarray(instances, dtype=object if has_boolean else np.float64)
                width = values.astype(np.float64, copy=False).reshape(len(instances), -1).shape[1]
            except (TypeError, ValueError):
                width = None
            if width != n_features:
                raise Unprocessable(
                    f"each instance must be a list of the {n_features} features {self.feature_names} "
                    f"(or a nested array of shape {self.input_shape})",
                    loc=["instances"],
                )
            flat_rows = values.reshape(len(instances), -1).tolist()
        return self.transform_frame(pd.DataFrame(flat_rows, columns=self.feature_names))

    # ---- labels ------------------------------------------------------------------
    def encode_labels(self, values: Any) -> np.ndarray:
        """Labels as uploaded -> the engine's y (see the module docstring)."""
        array = values.to_numpy() if isinstance(values, pd.Series) else np.asarray(values)
        if self.mode == "regression":
            y = np.asarray(array, dtype=np.float64)
            return y.reshape(len(y), -1)
        if self.mode == "binary" and self.classes is None:
            return np.asarray(array, dtype=np.float64).reshape(len(array), -1)
        index = {c: i for i, c in enumerate(self.classes or [])}
        flat = array.reshape(len(array)) if array.ndim > 1 else array
        # Factorise first so the per-label dict lookup runs once per distinct value, not per row.
        row_codes, distinct = pd.factorize(flat, use_na_sentinel=True)
        if (row_codes < 0).any():
            raise Unprocessable("the target has missing labels", loc=[self.target or "y"])
        codes = np.array([index[python_scalar(v)] for v in distinct], dtype=np.int64)[row_codes]
        if self.mode == "binary":
            return codes.astype(np.float64).reshape(-1, 1)
        return codes

    def decode_arrays(self, outputs: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Network.predict's outputs (N, n_outputs) -> (predictions: labels as uploaded (objects),
        0/1 per output (multi-label) or values, (N,) or (N, k); probabilities (N, k) float64 or
        None). Classification outputs are already probabilities (softmax or sigmoid applied)."""
        outputs = np.asarray(outputs, dtype=np.float64).reshape(len(outputs), -1)
        if self.mode == "regression":
            return (outputs[:, 0] if outputs.shape[1] == 1 else outputs), None
        if self.mode == "multiclass":
            return self._labels(np.argmax(outputs, axis=1)), outputs
        if self.classes is not None:
            positive = outputs[:, 0]
            return self._labels((positive >= 0.5).astype(np.intp)), np.stack([1 - positive, positive], axis=1)
        return (outputs >= 0.5).astype(int), outputs

    def _labels(self, codes: np.ndarray) -> np.ndarray:
        labels = np.empty(len(self.classes or []), dtype=object)
        labels[:] = self.classes or []  # each label keeps its Python type
        return labels[codes]

    def decode(self, outputs: np.ndarray) -> tuple[list[Any], list[list[float | None]] | None]:
        """decode_arrays as JSON values: lists, a non-finite float as None."""
        predictions, probabilities = self.decode_arrays(outputs)
        if self.mode == "regression":
            return _json_floats(predictions), None
        return predictions.tolist(), _json_floats(probabilities)


def _json_floats(values: np.ndarray) -> list[Any]:
    if np.isfinite(values).all():
        return values.tolist()
    if values.ndim == 1:
        return [finite_or_none(v) for v in values]
    return [[finite_or_none(v) for v in row] for row in values]
