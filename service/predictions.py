"""/v1/predictions: list (?model_id=), get, delete, and its rows as CSV or Parquet (/download)."""
from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from service import model_service
from service import predict as predict_service
from service.http import db, deleted, dump, query_choice, settings, tenant_id
from service.pagination import page_params, paged
from service.schemas import PredictionOut, PredictionSummary

blueprint = Blueprint("predictions", __name__)


@blueprint.get("/predictions")
def list_predictions() -> Response:
    """Newest first, summaries without rows; ?model_id= keeps one model's."""
    page = model_service.list_predictions(session=db(), tenant_id=tenant_id(), model_id=request.args.get("model_id"),
                                          **page_params())
    return paged([dump(PredictionSummary, row) for row in page.items], page)


@blueprint.delete("/predictions/<prediction_id>")
def delete_prediction(prediction_id: str) -> Response:
    return deleted(model_service.delete_prediction, prediction_id=prediction_id)


@blueprint.get("/predictions/<prediction_id>")
def get_prediction(prediction_id: str):  # noqa: ANN201
    row = predict_service.get_prediction(session=db(), tenant_id=tenant_id(), prediction_id=prediction_id)
    return jsonify(dump(PredictionOut, row))


@blueprint.get("/predictions/<prediction_id>/download")
def download_prediction(prediction_id: str) -> Response:
    from service.prediction_service import DOWNLOAD_FORMATS, download_stream  # noqa: PLC0415

    fmt = query_choice("format", DOWNLOAD_FORMATS, default="csv")
    stream = download_stream(session=db(), tenant_id=tenant_id(), prediction_id=prediction_id, fmt=fmt,
                             database_url=settings().database_url)
    mimetype = "text/csv" if fmt == "csv" else "application/vnd.apache.parquet"
    return Response(stream, mimetype=mimetype, headers={
        "Content-Disposition": f'attachment; filename="prediction-{prediction_id}.{fmt}"'})
