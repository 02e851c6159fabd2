"""/v1/models/{id}, its .npz download, and predictions with it."""
from __future__ import annotations

import io
import json
import zipfile

import numpy as np
from flask import Blueprint, Response, jsonify, request

from bps import predict as predict_service
from bps.models import Model
from bps.preprocessing import Preprocessor
from bps.problems import BadRequest
from service.http import created, db, dump, parse_body, settings, tenant_id
from service.schemas import ModelOut, PredictionCreate, PredictionOut

blueprint = Blueprint("models", __name__)
DOWNLOAD_FORMATS = ("npz", "onnx")


def model_resource(model: Model) -> dict:
    body = dump(ModelOut, model)
    if body["input_shape"] is None and model.preprocessing:
        body["input_shape"] = Preprocessor.from_json(model.preprocessing).input_shape
    return body


def download_npz(model: Model) -> bytes:
    """The engine's saved arrays (PyTorch state_dict names, "spec" and "input_shape") plus
    "preprocessing" (JSON, a 0-d string array); loadable with allow_pickle=False."""
    arrays: dict[str, np.ndarray] = {}
    with np.load(io.BytesIO(model.weights), allow_pickle=False) as saved:
        for name in saved.files:
            arrays[name] = saved[name]
    arrays["preprocessing"] = np.array(json.dumps(model.preprocessing or {}))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, array in arrays.items():
            member = io.BytesIO()
            np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)
            archive.writestr(name + ".npy", member.getvalue())
    return buffer.getvalue()


@blueprint.get("/models/<model_id>")
def get_model(model_id: str):  # noqa: ANN201
    return jsonify(model_resource(predict_service.get_model(session=db(), tenant_id=tenant_id(),
                                                            model_id=model_id)))


@blueprint.get("/models/<model_id>/download")
def download_model(model_id: str) -> Response:
    model = predict_service.get_model(session=db(), tenant_id=tenant_id(), model_id=model_id)
    fmt = request.args.get("format", "npz")
    if fmt not in DOWNLOAD_FORMATS:
        raise BadRequest(f"format {fmt!r} is not available; use one of {list(DOWNLOAD_FORMATS)}",
                         loc=["query", "format"])
    if fmt == "onnx":
        from bps.onnx_export import export_onnx  # noqa: PLC0415  (onnx loads only when asked for)

        body, mimetype = export_onnx(model), "application/onnx"
    else:
        body, mimetype = download_npz(model), "application/octet-stream"
    return Response(body, mimetype=mimetype, headers={
        "Content-Disposition": f'attachment; filename="model-{model.id}.{fmt}"'})


@blueprint.post("/models/<model_id>/predictions")
def create_prediction(model_id: str):  # noqa: ANN201
    body = parse_body(PredictionCreate)
    session = db()
    row = predict_service.create_prediction(
        session=session, tenant_id=tenant_id(), model_id=model_id, instances=body.instances,
        records=body.records, dataset_id=body.dataset_id, max_rows=settings().max_prediction_rows,
    )
    session.commit()
    return created(PredictionOut, row, 201, "v1.predictions.get_prediction", prediction_id=row.id)
