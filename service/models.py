"""/v1/models: list, get, delete, download (.npz, ONNX), predictions and evaluations with a model."""
from __future__ import annotations

import io
import json
import zipfile

import numpy as np
from flask import Blueprint, Response, jsonify

from bps.models import Model
from bps.preprocessing import Preprocessor
from bps.problems import Unprocessable
from service import job_service, model_service, prediction_service
from service import predict as predict_service
from service.http import created, db, deleted, dump, parse_body, query_choice, settings, tenant_id
from service.pagination import page_params, paged
from service.schemas import EvaluationCreate, ModelOut, ModelSummary, PredictionCreate, PredictionOut

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


@blueprint.get("/models")
def list_models() -> Response:
    page = model_service.list_models(session=db(), tenant_id=tenant_id(), **page_params())
    return paged([dump(ModelSummary, model) for model in page.items], page)


@blueprint.delete("/models/<model_id>")
def delete_model(model_id: str) -> Response:
    return deleted(model_service.delete_model, model_id=model_id)


@blueprint.post("/models/<model_id>/evaluations")
def evaluate_model(model_id: str) -> Response:
    from service.evaluations import evaluate  # noqa: PLC0415  (the engine's losses load only when asked for)

    result = evaluate(session=db(), tenant_id=tenant_id(), model_id=model_id, request=parse_body(EvaluationCreate),
                      max_rows=settings().max_prediction_rows)
    return jsonify(result.model_dump(mode="json", exclude_none=True))


@blueprint.get("/models/<model_id>/download")
def download_model(model_id: str) -> Response:
    model = predict_service.get_model(session=db(), tenant_id=tenant_id(), model_id=model_id)
    fmt = query_choice("format", DOWNLOAD_FORMATS, default="npz")
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
    dataset = None if body.dataset_id is None else predict_service.referenced_dataset(
        session=session, tenant_id=tenant_id(), dataset_id=body.dataset_id, model_id=model_id)
    if dataset is not None and (
            body.run_async or prediction_service.over_sync_limit(dataset, settings().max_prediction_rows)):
        return _create_async_prediction(session, model_id, dataset)
    if body.run_async:
        raise Unprocessable('"async" needs a dataset_id: instances and records are predicted at once',
                            loc=["body", "async"])
    row = predict_service.create_prediction(
        session=session, tenant_id=tenant_id(), model_id=model_id, instances=body.instances,
        records=body.records, dataset=dataset, max_rows=settings().max_prediction_rows,
    )
    session.commit()
    return created(PredictionOut, row, 201, "v1.predictions.get_prediction", prediction_id=row.id)


def _create_async_prediction(session, model_id: str, dataset):  # noqa: ANN001, ANN202
    row = prediction_service.create_async_prediction(session=session, tenant_id=tenant_id(), model_id=model_id,
                                                     dataset=dataset, settings=settings())
    session.commit()
    job_service.publish(settings(), row, publisher="publish_prediction")
    session.refresh(row)
    return created(PredictionOut, row, 202, "v1.predictions.get_prediction", prediction_id=row.id)
