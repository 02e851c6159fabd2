"""/v1/predictions/{id}."""
from __future__ import annotations

from flask import Blueprint, jsonify

from bps import predict as predict_service
from service.http import db, dump, tenant_id
from service.schemas import PredictionOut

blueprint = Blueprint("predictions", __name__)


@blueprint.get("/predictions/<prediction_id>")
def get_prediction(prediction_id: str):  # noqa: ANN201
    row = predict_service.get_prediction(session=db(), tenant_id=tenant_id(), prediction_id=prediction_id)
    return jsonify(dump(PredictionOut, row))
