"""Checks of a job request against the dataset's stored profile (no bytes are read):
target and features exist, input_shape fits the feature width after one-hot, the loss
fits the target's type, NaN/inf features need `impute`. Every problem is collected."""
from __future__ import annotations

from dataclasses import dataclass, field
from math import prod
from typing import Any

from bps.input_range import dtype_limit
from bps.models import Dataset
from bps.splits import split_problem
from bps.preprocessing import target_mode

Errors = list[dict[str, Any]]


@dataclass
class InputPlan:
    input_shape: tuple[int, ...] | None = None
    n_outputs: int | None = None
    features: list[str] | None = None  # the resolved feature columns (CSV/Parquet)
    errors: Errors = field(default_factory=list)

    def add(self, loc: list[Any], msg: str) -> None:
        self.errors.append({"loc": loc, "msg": msg})


def _profile(dataset: Dataset) -> dict[str, dict[str, Any]]:
    return {column["name"]: column for column in dataset.columns}


def _check_target(plan: InputPlan, column: dict[str, Any], mode: str | None, loc: list[Any], width: int) -> None:
    """Loss against the target's type; sets plan.n_outputs (k = target columns for regression)."""
    name = column["name"]
    if column.get("missing"):
        plan.add(loc, f"target {name!r} has {column['missing']} missing value(s); drop those rows")
    if mode is None:
        return
    if mode == "regression":
        if column.get("kind") != "numeric":
            plan.add(loc, f"target {name!r} holds strings: use cross_entropy or binary_cross_entropy, not a "
                          "regression loss")
        plan.n_outputs = width
        return
    if column.get("kind") == "numeric" and not column.get("integral", True):
        plan.add(loc, f"target {name!r} holds non-integer numbers; a classification loss needs discrete labels "
                      "(use mse, mae or huber for regression)")
        return
    n_classes = int(column.get("n_unique") or 0)
    if mode == "binary" and width > 1:
        plan.n_outputs = width
    elif mode == "binary":
        if n_classes > 2:
            plan.add(loc, f"binary_cross_entropy needs 2 classes; {name!r} has {n_classes} (use cross_entropy)")
        plan.n_outputs = 1
    else:
        if n_classes < 2:
            plan.add(loc, f"target {name!r} has {n_classes} distinct value(s); classification needs at least 2")
        plan.n_outputs = n_classes


def _check_input_shape(plan: InputPlan, width: int, input_shape: list[int] | None,
                       natural: tuple[int, ...]) -> None:
    if input_shape is None:
        plan.input_shape = natural
    elif prod(input_shape) != width:
        plan.add(["body", "input_shape"], f"input_shape {input_shape} holds {prod(input_shape)} values per row; "
                                          f"the features give {width}")
    else:
        plan.input_shape = tuple(input_shape)


def plan_tabular(dataset: Dataset, *, target: str | None, features: list[str] | None,
                 input_shape: list[int] | None, mode: str | None, impute: str | None) -> InputPlan:
    plan, profile = InputPlan(), _profile(dataset)
    if not target:
        plan.add(["body", "target"], "a CSV or Parquet dataset needs \"target\": the label column")
    elif target not in profile:
        plan.add(["body", "target"], f"target column {target!r} is not in the dataset; columns: {list(profile)}")
    names = list(features) if features else [n for n in profile if n != target]
    plan.features = names
    unknown = [n for n in names if n not in profile]
    if unknown:
        plan.add(["body", "features"], f"feature column(s) {unknown} are not in the dataset")
    if target and target in names and features:
        plan.add(["body", "features"], f"the target {target!r} cannot also be a feature")
    if len(set(names)) != len(names):
        plan.add(["body", "features"], "features lists a column more than once")
    known = [profile[n] for n in names if n in profile]
    for column in known:
        if column.get("non_finite") and impute is None:
            plan.add(["dataset", column["name"]],
                     f"column {column['name']!r} has {column['non_finite']} missing or non-finite value(s): add "
                     "\"impute\": \"mean\" | \"median\" | \"zero\" to the job, or clean the data")
    width = sum(1 if c.get("kind") == "numeric" else int(c.get("n_unique") or 0) for c in known)
    if not names:
        plan.add(["body", "features"], "there are no feature columns")
    if not unknown and names:
        _check_input_shape(plan, width, input_shape, (width,))
    if target in profile:
        _check_target(plan, profile[target], mode, ["body", "target"], 1)
    return plan


def plan_npz(dataset: Dataset, *, target: str | None, features: list[str] | None,
             input_shape: list[int] | None, mode: str | None, impute: str | None) -> InputPlan:
    plan, profile, shapes = InputPlan(), _profile(dataset), dataset.shapes or {}
    if target is not None or features is not None:
        plan.add(["body", "target" if target is not None else "features"],
                 "an .npz dataset has no named columns: omit target and features (X and y are used)")
    x_shape, y_shape = list(shapes.get("X", [0, 1])), list(shapes.get("y", [0]))
    x_column = profile.get("X", {})
    if x_column.get("non_finite") and impute is None:
        plan.add(["dataset", "X"], f"X has {x_column['non_finite']} missing or non-finite value(s): add "
                                   "\"impute\": \"mean\" | \"median\" | \"zero\" to the job, or clean the data")
    _check_input_shape(plan, prod(x_shape[1:]), input_shape, tuple(x_shape[1:]))
    if "y" in profile:
        k = y_shape[1] if len(y_shape) == 2 else 1
        if mode in ("multiclass",) and k > 1:
            plan.add(["dataset", "y"], f"cross_entropy needs y of shape (N,) with class labels; y is {y_shape}")
        else:
            _check_target(plan, profile["y"], mode, ["dataset", "y"], k)
    return plan


def check_dtype_range(plan: InputPlan, dataset: Dataset, *, target: str | None, mode: str | None,
                      dtype: str) -> None:
    """Values beyond the model's dtype (1e39 in a float32 model) become inf in training: the
    columns that hold them are refused here (the worker names the first row). CSV/Parquet
    features are standardised first (|z| <= sqrt(n)), so only .npz X and regression targets,
    used as they are, can overflow."""
    limit = dtype_limit(dtype)
    profile = _profile(dataset)
    inputs = ["X"] if dataset.format == "npz" else []
    outputs = [target if dataset.format != "npz" else "y"] if mode == "regression" else []
    for name in [*inputs, *outputs]:
        column = profile.get(name) or {}
        extreme = max((abs(column[k]) for k in ("min", "max") if column.get(k) is not None), default=0.0)
        if extreme > limit:
            plan.add(["dataset", name], f"column {name!r} holds {extreme:.4g}, beyond the range of a {dtype} model "
                                        f"(±{limit:.3g}): rescale the column or use \"dtype\": \"float64\"")


def plan_inputs(dataset: Dataset, *, loss: Any, dtype: Any = "float32", **request: Any) -> InputPlan:
    """`request`: target, features, input_shape, impute. `loss` may be unknown (None)."""
    try:
        mode = target_mode(loss) if isinstance(loss, str) else None
    except ValueError:
        mode = None
    planner = plan_npz if dataset.format == "npz" else plan_tabular
    plan = planner(dataset, mode=mode, **request)
    if dtype in ("float32", "float64"):
        check_dtype_range(plan, dataset, target=request.get("target"), mode=mode, dtype=dtype)
    return plan


def split_errors(dataset: Dataset, spec: dict[str, Any] | None) -> Errors:
    """A validation_split that leaves no training or no validation row (0.999 of 150 rows)."""
    problem = split_problem(dataset.n_rows, spec["validation_split"]) if spec is not None else None
    return [{"loc": ["spec", "validation_split"], "msg": problem}] if problem else []
