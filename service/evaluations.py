"""POST /v1/models/{id}/evaluations: a model scored on held-out rows that carry the truth (one of
the tenant's datasets, or instances with targets). The rows go through the predictions' own
machinery (service.predict); this module adds the labels and the metrics."""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy.orm import Session

from bps.preprocessor import Preprocessor, python_scalar
from bps.problems import PayloadTooLarge, Unprocessable
from service.predict import build_inputs, dataset_rows, referenced_dataset, warm_runtime
from service.schemas import ConfusionMatrix, EvaluationCreate, EvaluationOut

NON_FINITE_OUTPUTS = ("the model's outputs are not finite for these rows: are some inputs far outside the training "
                      "data's range?")


def _rows_and_labels(session: Session, tenant_id: str, prep: Preprocessor, request: EvaluationCreate,
                     max_rows: int) -> tuple[np.ndarray, Any, list[Any]]:
    """(X, labels as uploaded, loc of the labels) from the request's source, at most `max_rows` rows."""
    if request.dataset_id is None:
        if len(request.instances or []) > max_rows:
            raise PayloadTooLarge(f"{len(request.instances or [])} rows is more than the {max_rows} an evaluation "
                                  "takes (MAX_PREDICTION_ROWS): evaluate a sample", loc=["body", "instances"],
                                  members={"max_rows": max_rows})
        X = build_inputs(session=session, prep=prep, instances=request.instances, records=None, dataset=None)
        return X, np.asarray(request.targets, dtype=object), ["body", "targets"]
    dataset = referenced_dataset(session=session, tenant_id=tenant_id, dataset_id=request.dataset_id)
    if dataset.n_rows > max_rows:
        raise Unprocessable(f"the dataset has {dataset.n_rows} rows, more than the {max_rows} an evaluation takes "
                            "(MAX_PREDICTION_ROWS): upload a sample of it", loc=["body", "dataset_id"])
    X, labels = dataset_rows(session, dataset, prep)
    if labels is None:
        raise Unprocessable(f"the dataset has no column {prep.target!r}, the model's target: an evaluation needs "
                            "the true labels", loc=["body", "dataset_id", str(prep.target)])
    return X, labels, ["body", "dataset_id", prep.target or "y"]


def _encode_targets(prep: Preprocessor, labels: Any, loc: list[Any]) -> np.ndarray:
    """The engine's y for `labels`; 422 naming labels the model does not know, or non-numbers."""
    values = labels.to_numpy(dtype=object) if isinstance(labels, pd.Series) else np.asarray(labels, dtype=object)
    if prep.mode == "regression" or prep.classes is None:
        try:
            y = np.asarray(values.tolist(), dtype=np.float64).reshape(len(values), -1)
        except (TypeError, ValueError):
            raise Unprocessable("the targets must be numbers", loc=loc) from None
        if y.shape[1] != prep.n_outputs or not np.isfinite(y).all():
            raise Unprocessable(f"each target must be {prep.n_outputs} finite number(s)", loc=loc)
        return y
    flat = values.reshape(len(values))
    if pd.isna(flat).any():
        raise Unprocessable(f"the targets have {int(pd.isna(flat).sum())} missing label(s)", loc=loc)
    unknown = sorted({python_scalar(v) for v in pd.unique(flat)} - set(prep.classes), key=str)
    if unknown:
        raise Unprocessable(f"label(s) {unknown[:10]} are not among the model's classes {prep.classes[:20]}", loc=loc)
    return prep.encode_labels(flat)


def _classification_metrics(prep: Preprocessor, outputs: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    if prep.classes is None:  # multi-label 0/1 targets: accuracy over every label
        return {"accuracy": float(np.mean((outputs >= 0.5) == (y >= 0.5)))}
    if prep.mode == "binary":
        predicted, truth = (outputs[:, 0] >= 0.5).astype(np.int64), y[:, 0].astype(np.int64)
    else:
        predicted, truth = np.argmax(outputs, axis=1), y.astype(np.int64)
    matrix = np.zeros((len(prep.classes), len(prep.classes)), dtype=np.int64)
    np.add.at(matrix, (truth, predicted), 1)
    return {"accuracy": float(np.mean(predicted == truth)),
            "confusion_matrix": ConfusionMatrix(labels=prep.classes, matrix=matrix.tolist())}


def _regression_metrics(outputs: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """R² per target column averaged (a constant column scores 1 when fitted exactly, else 0, as
    scikit-learn's force_finite), MAE and RMSE over every value."""
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):  # evaluate() refuses what overflows
        errors = outputs.reshape(y.shape) - y
        residual = (errors ** 2).sum(axis=0)
        spread = ((y - y.mean(axis=0)) ** 2).sum(axis=0)
        r2 = np.where(spread > 0, 1.0 - residual / spread, np.where(residual == 0, 1.0, 0.0))
        return {"r2": float(r2.mean()), "mae": float(np.abs(errors).mean()),
                "rmse": float(np.sqrt((errors ** 2).mean()))}


def _refuse_overflowing_targets(y: np.ndarray, loc: list[Any], dtype: str) -> None:
    """422 naming the row of the largest target: the outputs are finite, so the targets' own size
    overflowed the loss or the errors (e.g. 1e20 squared is beyond float32)."""
    row = int(np.argmax(np.abs(y).max(axis=1)))
    raise Unprocessable(f"the loss or the errors overflow {dtype} with these targets (the largest, "
                        f"{np.abs(y[row]).max():g}, in row {row}): are they in the units the model was trained on?",
                        loc=[*loc, row])


def evaluate(*, session: Session, tenant_id: str, model_id: str, request: EvaluationCreate,
             max_rows: int) -> EvaluationOut:
    net, prep = warm_runtime(session=session, tenant_id=tenant_id, model_id=model_id)
    X, labels, loc = _rows_and_labels(session, tenant_id, prep, request, max_rows)
    y = _encode_targets(prep, labels, loc)
    with np.errstate(over="ignore", invalid="ignore"):  # an overflow is refused below, naming its row
        outputs, loss = net.predict_with_loss(X, y)
    outputs = np.asarray(outputs, dtype=np.float64).reshape(len(X), -1)
    if not np.isfinite(outputs).all():
        raise Unprocessable(NON_FINITE_OUTPUTS, loc=["body"])
    metrics = (_regression_metrics(outputs, y) if prep.mode == "regression"
               else _classification_metrics(prep, outputs, y))
    if not all(np.isfinite(value) for value in (loss, *metrics.values()) if isinstance(value, float)):
        if prep.mode != "regression":
            raise Unprocessable(NON_FINITE_OUTPUTS, loc=["body"])
        _refuse_overflowing_targets(y, loc, net.net.spec["dtype"])
    return EvaluationOut(model_id=model_id, dataset_id=request.dataset_id, task=prep.task, n=len(X),
                         loss_name=net.net.spec["loss"], loss=loss, **metrics)
