"""How a training run ends: the job's status, why it stopped (`stop_reason` and a sentence), and
the model it keeps. A completed or early-stopped run keeps its model; a cancelled one, or one that
reached its time limit, keeps a *partial* model when at least one epoch was trained (the best
epoch with restore_best, else the last completed one: the engine rolls back a stopped epoch)."""
from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

from bps.config import Settings
from bps.db import session_scope
from worker import job_store
from worker.job_store import JobSnapshot

STOP_REASONS = ("completed", "early_stopping", "cancelled", "time_limit", "diverged", "error")


@dataclass
class Outcome:
    status: str  # succeeded | failed | cancelled
    stop_reason: str
    detail: str
    error: str | None = None
    keeps_model: bool = False

    @property
    def partial(self) -> bool:
        return self.keeps_model and self.status != "succeeded"


def decide(spec: dict[str, Any], history: Any, *, epochs_done: int, timed_out: bool, time_limit_s: float,
           last_epoch: int) -> Outcome:
    """The outcome of a run that stopped for `history.stop_reason` (not a shutdown requeue)."""
    reason = history.stop_reason
    if reason == "diverged":
        error = (f"loss became NaN at epoch {history.diverged_epoch}: lower the learning rate or set "
                 "gradient_clip_norm")
        return Outcome("failed", "diverged", error, error)
    if reason == "cancelled" and timed_out:
        error = (f"time limit of {time_limit_s:g} s reached after epoch {last_epoch}: use fewer epochs, a smaller "
                 "model or a smaller dataset")
        return Outcome("failed", "time_limit", error + _kept(epochs_done), error + _kept(epochs_done),
                       keeps_model=epochs_done >= 1)
    if reason == "cancelled":
        return Outcome("cancelled", "cancelled", f"cancelled after epoch {last_epoch}" + _kept(epochs_done),
                       keeps_model=epochs_done >= 1)
    if reason == "early_stopping":
        return Outcome("succeeded", "early_stopping", _early_stopping_detail(spec, history, last_epoch),
                       keeps_model=True)
    return Outcome("succeeded", "completed", f"all {spec['epochs']} epochs trained", keeps_model=True)


def _kept(epochs_done: int) -> str:
    return "; the trained weights are kept as a partial model" if epochs_done >= 1 else ""


def _early_stopping_detail(spec: dict[str, Any], history: Any, last_epoch: int) -> str:
    es = spec["early_stopping"]
    held = f"the model holds epoch {history.best_epoch}" if es["restore_best"] else "the model holds the last epoch"
    return (f"{es['monitor']} did not improve by more than {es['min_delta']:g} for {es['patience']} epochs after "
            f"its best, epoch {history.best_epoch}; stopped after epoch {last_epoch}; {held}")


def model_metrics(settings: Settings, job: JobSnapshot, history: Any) -> dict[str, Any] | None:
    """The metrics of the epoch whose weights the model holds, with its `epoch`: the best epoch
    when early stopping restored it (possibly recorded by an earlier attempt), else the last one."""
    from sqlalchemy import select  # noqa: PLC0415

    from bps.models import Epoch, Job  # noqa: PLC0415

    early_stopping = job.spec.get("early_stopping") or {}
    best = history.best_epoch if early_stopping.get("restore_best") else None
    with session_scope(settings.database_url) as session:
        row = best and session.scalar(select(Epoch).where(Epoch.job_id == job.id, Epoch.epoch == best))
        if not row:
            latest = session.get(Job, job.id)
            return {**latest.metrics, "epoch": latest.epoch} if latest.metrics else latest.metrics
        return {**job_store.epoch_metrics(vars(row)), "epoch": best}


def model_values(settings: Settings, job: JobSnapshot, net: Any, preprocessor: Any, history: Any,
                 outcome: Outcome) -> dict[str, Any]:
    """The Model row's values: preprocessing, weights, and the metrics of the epoch it holds."""
    features = preprocessor.features or job.features
    return {
        "task": str(job.task or preprocessor.task), "features": jsonable(features), "target": job.target,
        "classes": jsonable(preprocessor.classes), "input_shape": job.input_shape, "spec": job.spec,
        "metrics": model_metrics(settings, job, history), "preprocessing": preprocessor.to_json(),
        "weights": network_bytes(net), "partial": outcome.partial,
        "partial_reason": outcome.stop_reason if outcome.partial else None,
    }


def network_bytes(net: Any) -> bytes:
    """Network.save's .npz as bytes."""
    buffer = io.BytesIO()
    net.save(buffer)
    return buffer.getvalue()


def jsonable(values: Any) -> list[Any] | None:
    """Labels/feature names as plain JSON values (NumPy scalars become Python ones)."""
    if values is None:
        return None
    return [v.item() if hasattr(v, "item") else v for v in list(values)]
