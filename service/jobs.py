"""/v1/jobs: submit (202 + Location), list (newest first, ?status=), get, delete, epochs, events, cancel."""
from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from bps.models import JOB_STATUSES
from service import events, job_service
from service.http import created, db, deleted, dump, parse_body, query_choice, query_int, settings, tenant_id
from service.pagination import MAX_OFFSET, page_params, paged
from service.schemas import EpochList, JobCreate, JobOut

blueprint = Blueprint("jobs", __name__)


@blueprint.post("/jobs")
def submit_job():  # noqa: ANN201
    body = parse_body(JobCreate)
    session, config = db(), settings()
    job = job_service.create_job(session=session, tenant_id=tenant_id(), request=body, settings=config)
    session.commit()  # the row exists before any worker can receive the message
    job_service.publish(config, job)
    return created(JobOut, job, 202, "v1.jobs.get_job", job_id=job.id)


@blueprint.get("/jobs")
def list_jobs():  # noqa: ANN201
    status = query_choice("status", JOB_STATUSES)
    page = job_service.list_jobs(session=db(), tenant_id=tenant_id(), status=status, **page_params())
    return paged([dump(JobOut, job) for job in page.items], page)


@blueprint.get("/jobs/<job_id>")
def get_job(job_id: str):  # noqa: ANN201
    return jsonify(dump(JobOut, job_service.get_job(session=db(), tenant_id=tenant_id(), job_id=job_id)))


@blueprint.delete("/jobs/<job_id>")
def delete_job(job_id: str) -> Response:
    return deleted(job_service.delete_job, job_id=job_id)


@blueprint.get("/jobs/<job_id>/epochs")
def list_epochs(job_id: str) -> Response:
    """Every epoch in order; ?since=N: only those after epoch N; ?limit/?offset: one page of them."""
    page = job_service.list_epochs(
        session=db(), tenant_id=tenant_id(), job_id=job_id, since=query_int("since", 0, low=0, high=MAX_OFFSET),
        limit=query_int("limit", 0, low=1, high=MAX_OFFSET) or None, offset=query_int("offset", 0, low=0, high=MAX_OFFSET))
    return paged(EpochList.model_validate({"epochs": page.items}).model_dump(mode="json"), page)


@blueprint.get("/jobs/<job_id>/events")
def job_events(job_id: str) -> Response:
    stream = events.open_stream(session=db(), tenant_id=tenant_id(), job_id=job_id,
                                last_event_id=request.headers.get("Last-Event-ID"), settings=settings())
    return Response(stream, mimetype="text/event-stream",
                    headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


@blueprint.post("/jobs/<job_id>/cancel")
def cancel_job(job_id: str):  # noqa: ANN201
    session = db()
    job = job_service.cancel_job(session=session, tenant_id=tenant_id(), job_id=job_id)
    session.commit()
    return jsonify(dump(JobOut, job)), 202
