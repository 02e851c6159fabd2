"""Predictions with a trained model: networks cached per process (models are immutable),
inputs from instances, records or a stored dataset, results stored as Prediction rows."""
from __future__ import annotations

import io
import itertools
import threading
from collections import OrderedDict
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy.orm import Session

from bps.dataset_files import read_npz_arrays, read_table
from bps.datasets import load_dataset_bytes
from bps.input_range import check_inputs_fit, check_outputs_finite
from bps.models import Dataset, Model, Prediction, utcnow
from bps.preprocessing import UNBOUNDED_ARRAY_BYTES, Preprocessor
from bps.tenants import find_owned, get_owned, require_owned
from bps.problems import PayloadTooLarge, Unprocessable

CACHE_SIZE = 32
LOSS_CHUNK = 4096
_cache: OrderedDict[str, tuple[SerialNetwork, Preprocessor]] = OrderedDict()
_cache_lock = threading.Lock()
_PLAIN_NUMBERS = {int, float}


def load_network(weights: bytes) -> Any:
    """Network.load of the stored .npz bytes."""
    from worker.engine import Network  # noqa: PLC0415

    return Network.load(io.BytesIO(weights))


class SerialNetwork:
    """A cached network shared by the API's threads. The engine's layers reuse scratch buffers
    between calls (and matmul releases the GIL), so one predict at a time per network."""

    def __init__(self, net: Any) -> None:
        self.net, self._lock = net, threading.Lock()

    @property
    def dtype(self) -> Any:
        return self.net.dtype

    def predict(self, X: Any) -> Any:
        with self._lock:
            return self.net.predict(X)

    def predict_with_loss(self, X: Any, y: Any) -> tuple[Any, float]:
        """predict(X), and the spec's loss on (X, y) computed as an epoch's val_loss is (eval
        mode, from the logits where the output activation is fused, no l2 term)."""
        with self._lock:
            net, total = self.net, 0.0
            for start in range(0, len(X), LOSS_CHUNK):
                logits = net.forward(net.inputs(X[start:start + LOSS_CHUNK]), False)
                total += float(net.loss.value(logits, net.targets(y[start:start + LOSS_CHUNK]))) * len(logits)
            return net.predict(X), total / max(1, len(X))


def _cached(model_id: str) -> tuple[SerialNetwork, Preprocessor] | None:
    with _cache_lock:
        if model_id in _cache:
            _cache.move_to_end(model_id)
            return _cache[model_id]
    return None


def model_runtime(model: Model) -> tuple[SerialNetwork, Preprocessor]:
    """(network, preprocessor) of `model`, loaded once per process (LRU of CACHE_SIZE)."""
    cached = _cached(model.id)
    if cached is not None:
        return cached
    runtime = (SerialNetwork(load_network(model.weights)), Preprocessor.from_json(model.preprocessing))
    with _cache_lock:
        _cache[model.id] = runtime
        while len(_cache) > CACHE_SIZE:
            _cache.popitem(last=False)
    return runtime


def warm_runtime(*, session: Session, tenant_id: str, model_id: str) -> tuple[SerialNetwork, Preprocessor]:
    """`model_runtime` of the tenant's model (404 otherwise). A cached model costs one indexed
    id lookup; only a miss loads the Model row, its weights included."""
    require_owned(session, Model, tenant_id, model_id, "model")
    return _cached(model_id) or model_runtime(get_model(session=session, tenant_id=tenant_id, model_id=model_id))


def clear_cache() -> None:
    with _cache_lock:
        _cache.clear()


def forget_model(model_id: str) -> None:
    """Drops a deleted model from this process's cache (other processes never serve it either:
    warm_runtime looks the id up in the database first)."""
    with _cache_lock:
        _cache.pop(model_id, None)


def get_model(*, session: Session, tenant_id: str, model_id: str) -> Model:
    return get_owned(session, Model, tenant_id, model_id, "model")


def get_prediction(*, session: Session, tenant_id: str, prediction_id: str) -> Prediction:
    return get_owned(session, Prediction, tenant_id, prediction_id, "prediction")


def referenced_dataset(*, session: Session, tenant_id: str, dataset_id: str, model_id: str | None = None) -> Dataset:
    """The tenant's dataset named in a request body; a missing one is a 422 there, as POST /v1/jobs
    answers, unless the path's model `model_id` is missing too: that 404 comes first."""
    dataset = find_owned(session, Dataset, tenant_id, dataset_id)
    if dataset is None:
        if model_id is not None:
            require_owned(session, Model, tenant_id, model_id, "model")
        raise Unprocessable(f"dataset {dataset_id} not found", loc=["body", "dataset_id"])
    return dataset


_FORMAT_NAMES = {"npz": ".npz", "csv": "CSV", "parquet": "Parquet"}


def check_input_kind(prep: Preprocessor, given: str, loc: list[Any], dataset_id: str | None = None) -> None:
    """The one rule of which rows a model takes: one trained on an .npz dataset takes arrays
    (instances or an .npz dataset); one trained on named columns takes those columns (records, a
    CSV or Parquet dataset) or instances. `given`: "records" or a dataset's format."""
    if (given == "npz") == (prep.source == "array"):
        return
    what = "records" if given == "records" else f"a{'n' if given == 'npz' else ''} {_FORMAT_NAMES[given]} dataset"
    what += f" ({dataset_id})" if dataset_id else ""
    if prep.source == "array":
        raise Unprocessable(f"this model was trained on an .npz dataset: give instances or an .npz dataset, "
                            f"not {what}", loc=loc)
    raise Unprocessable(f"this model was trained on named columns: give records, instances or a CSV or Parquet "
                        f"dataset, not {what}", loc=loc)


def dataset_rows(session: Session, dataset: Dataset, prep: Preprocessor) -> tuple[np.ndarray, Any]:
    """The model's X from `dataset` (the tenant's, looked up by the caller), and the dataset's
    labels: its .npz y, or the model's target column (None when the CSV/Parquet file has no such
    column)."""
    loc = ["body", "dataset_id"]
    check_input_kind(prep, dataset.format, loc)
    raw = load_dataset_bytes(session=session, dataset_id=dataset.id)
    try:
        if dataset.format == "npz":
            X, y = read_npz_arrays(raw, max_array_bytes=UNBOUNDED_ARRAY_BYTES)
            return prep.transform_arrays(X), y
        frame = read_table(raw, dataset.format)
        return prep.transform_frame(frame), (frame[prep.target] if prep.target in frame.columns else None)
    except Unprocessable as exc:
        raise _with_loc(exc, loc) from None


def numeric_instances(prep: Preprocessor, instances: list[Any]) -> np.ndarray | None:
    """The fast path of `prep.transform_instances` for the common case, without pandas: a
    tabular model whose features are all numeric, and rows that are lists of `len(features)`
    finite ints/floats. Same arithmetic ((x - mean) / std in float64), so the same result.
    None for anything else (strings, None, NaN, bools, nested shapes): the general path then
    answers, with its messages. Returns float64 (N, *input_shape)."""
    n_features = len(prep.features)
    if prep.source != "tabular" or not instances or n_features == 0 or (n_features == 1 and prep.width != 1):
        return None
    if any(encoder["kind"] != "numeric" for encoder in prep.encoders):
        return None
    if any(type(row) is not list or len(row) != n_features for row in instances):
        return None
    if not set(map(type, itertools.chain.from_iterable(instances))) <= _PLAIN_NUMBERS:  # bool is not one
        return None
    try:
        values = np.asarray(instances, dtype=np.float64)
    except (OverflowError, ValueError):
        return None
    if not np.isfinite(values).all():
        return None
    means = np.array([encoder["mean"] for encoder in prep.encoders], dtype=np.float64)
    stds = np.array([encoder["std"] for encoder in prep.encoders], dtype=np.float64)
    with np.errstate(over="ignore"):  # an overflow is refused by input_range, naming the value
        return ((values - means) / stds).reshape((len(instances), *prep.input_shape))


def _with_loc(exc: Unprocessable, prefix: list[Any]) -> Unprocessable:
    """Prefixes each error's loc, without repeating a leading part the error already names."""
    def joined(loc: list[Any]) -> list[Any]:
        return [*prefix, *(loc[1:] if loc[:1] == prefix[-1:] else loc)]

    exc.errors = [{"loc": joined(e["loc"]), "msg": e["msg"]} for e in exc.errors]
    return exc


def build_inputs(*, session: Session, prep: Preprocessor, instances: list[Any] | None,
                 records: list[dict[str, Any]] | None, dataset: Dataset | None) -> np.ndarray:
    """The model's X (N, *input_shape) from exactly one of the three sources (`dataset`: the
    tenant's row, looked up by the caller)."""
    try:
        if instances is not None:
            fast = numeric_instances(prep, instances)
            return fast if fast is not None else prep.transform_instances(instances)
        if records is not None:
            check_input_kind(prep, "records", [])
            return prep.transform_frame(pd.DataFrame.from_records(records))
    except Unprocessable as exc:
        raise _with_loc(exc, ["body", "instances" if instances is not None else "records"]) from None
    return dataset_rows(session, dataset, prep)[0]


def _source_loc(instances: list[Any] | None, records: list[Any] | None) -> list[Any]:
    return ["body", "instances" if instances is not None else "records" if records is not None else "dataset_id"]


def checked_outputs(net: SerialNetwork, prep: Preprocessor, X: np.ndarray, loc: list[Any]) -> np.ndarray:
    """The network's outputs for X, after refusing (422, naming row and column) inputs beyond
    the model's dtype and any row whose output is not finite: never a null in a 201."""
    check_inputs_fit(X, prep, net.dtype, loc)
    with np.errstate(over="ignore", invalid="ignore"):  # a non-finite output is refused just below
        outputs = np.asarray(net.predict(X))
    check_outputs_finite(outputs, X, prep, loc)
    return outputs


def create_prediction(*, session: Session, tenant_id: str, model_id: str, instances: list[Any] | None = None,
                      records: list[dict[str, Any]] | None = None, dataset: Dataset | None = None,
                      max_rows: int) -> Prediction:
    """Predict synchronously (at most `max_rows` rows: 413 beyond) and store the result, created,
    started and finished as it ran (as an asynchronous prediction's). `dataset`: the tenant's row
    (referenced_dataset's), looked up by the caller."""
    started = utcnow()
    net, prep = warm_runtime(session=session, tenant_id=tenant_id, model_id=model_id)
    given = len(instances or records or [])
    if given > max_rows:
        raise PayloadTooLarge(f"{given} rows is more than the {max_rows} a synchronous prediction takes "
                              "(MAX_PREDICTION_ROWS): split the request", loc=["body"], members={"max_rows": max_rows})
    X = build_inputs(session=session, prep=prep, instances=instances, records=records, dataset=dataset)
    if len(X) > max_rows:
        raise PayloadTooLarge(f"the dataset has {len(X)} rows, more than the {max_rows} a synchronous "
                              "prediction takes (MAX_PREDICTION_ROWS)", loc=["body", "dataset_id"],
                              members={"max_rows": max_rows})
    predictions, probabilities = prep.decode(checked_outputs(net, prep, X, _source_loc(instances, records)))
    row = Prediction(tenant_id=tenant_id, model_id=model_id, n=len(predictions), predictions=predictions,
                     probabilities=probabilities, created_at=started, started_at=started, finished_at=utcnow())
    session.add(row)
    session.flush()
    return row
