"""/v1/datasets: upload (multipart `file`, optional `name`), list, get, delete."""
from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from bps import datasets as dataset_service
from bps.problems import BadRequest, UnsupportedMediaType
from service.http import created, db, deleted, dump, settings, tenant_id
from service.pagination import page_params, paged
from service.schemas import DatasetOut, DatasetSummary

blueprint = Blueprint("datasets", __name__)


@blueprint.post("/datasets")
def upload_dataset():  # noqa: ANN201
    if request.mimetype != "multipart/form-data":
        raise UnsupportedMediaType(
            "upload the dataset as multipart/form-data with a 'file' field", loc=["header", "Content-Type"]
        )
    upload = request.files.get("file")
    if upload is None:
        raise BadRequest("the multipart body has no 'file' field", loc=["body", "file"])
    config = settings()
    raw = dataset_service.read_limited(upload.stream, limit=config.max_upload_bytes)
    session = db()
    dataset = dataset_service.create_dataset(
        session=session, tenant_id=tenant_id(), raw=raw, filename=upload.filename or "",
        name=request.form.get("name"), chunk_bytes=config.dataset_chunk_bytes,
        max_rows=config.max_dataset_rows, max_array_bytes=4 * config.max_upload_bytes,
    )
    session.commit()
    return created(DatasetOut, dataset, 201, "v1.datasets.get_dataset", dataset_id=dataset.id)


@blueprint.get("/datasets")
def list_datasets() -> Response:
    page = dataset_service.list_datasets(session=db(), tenant_id=tenant_id(), **page_params())
    return paged([dump(DatasetSummary, row) for row in page.items], page)


@blueprint.get("/datasets/<dataset_id>")
def get_dataset(dataset_id: str):  # noqa: ANN201
    return jsonify(dump(DatasetOut, dataset_service.get_dataset(session=db(), tenant_id=tenant_id(),
                                                                  dataset_id=dataset_id)))


@blueprint.delete("/datasets/<dataset_id>")
def delete_dataset(dataset_id: str) -> Response:
    return deleted(dataset_service.delete_dataset, dataset_id=dataset_id)
