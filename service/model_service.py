"""Models and predictions: lists (newest first) and deletes. Every query is scoped to the
tenant; another tenant's id is a 404 like a missing one."""
from __future__ import annotations

from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session, defer

from bps.listing import Page, fetch_page
from bps.models import Model, Prediction
from bps.problems import Conflict
from bps.tenants import require_owned
from service.predict import forget_model

ACTIVE_PREDICTION_STATUSES = ("queued", "running")
LIST_DEFERRED = (Model.weights, Model.preprocessing, Model.features, Model.spec)  # not in list entries


def list_models(*, session: Session, tenant_id: str, limit: int, offset: int) -> Page:
    query = (select(Model).options(*(defer(column) for column in LIST_DEFERRED)).where(Model.tenant_id == tenant_id)
             .order_by(Model.created_at.desc(), Model.id.desc()))
    return fetch_page(session, query, limit=limit, offset=offset)


def _refuse_while_predicting(session: Session, where: Any, what: str, loc: list[str]) -> None:
    """409 while an asynchronous prediction selected by `where` is queued or running (its worker
    still writes to it)."""
    active = session.scalar(select(func.count()).select_from(Prediction).where(
        where, Prediction.status.in_(ACTIVE_PREDICTION_STATUSES)))
    if active:
        raise Conflict(f"{what} has {active} asynchronous prediction(s) still queued or running: delete it once "
                       "they have ended", loc=loc)


def delete_model(*, session: Session, tenant_id: str, model_id: str) -> None:
    """Delete a model and its predictions (they are its outputs; nothing else refers to them).
    The job that trained it keeps its record and model_id, which then answers 404."""
    require_owned(session, Model, tenant_id, model_id, "model")
    _refuse_while_predicting(session, Prediction.model_id == model_id, f"model {model_id}", ["path", "model_id"])
    session.execute(delete(Prediction).where(Prediction.model_id == model_id))
    session.execute(delete(Model).where(Model.id == model_id))
    forget_model(model_id)


def list_predictions(*, session: Session, tenant_id: str, model_id: str | None, limit: int, offset: int) -> Page:
    """Summaries (no rows), newest first; `model_id` keeps one model's (another tenant's: none)."""
    query = (select(Prediction).options(defer(Prediction.predictions), defer(Prediction.probabilities))
             .where(Prediction.tenant_id == tenant_id))
    if model_id is not None:
        query = query.where(Prediction.model_id == model_id)
    return fetch_page(session, query.order_by(Prediction.created_at.desc(), Prediction.id.desc()),
                      limit=limit, offset=offset)


def delete_prediction(*, session: Session, tenant_id: str, prediction_id: str) -> None:
    require_owned(session, Prediction, tenant_id, prediction_id, "prediction")
    _refuse_while_predicting(session, Prediction.id == prediction_id, f"prediction {prediction_id}",
                             ["path", "prediction_id"])
    session.execute(delete(Prediction).where(Prediction.id == prediction_id))
