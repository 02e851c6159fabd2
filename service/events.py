"""GET /v1/jobs/{id}/events: a job's status changes and epochs as server-sent events (CONTRACT §6).

The stream polls the database (one indexed `status, epoch` lookup every EVENT_POLL_INTERVAL_S;
the epoch rows and the Job only when they changed), so any API process serves any job whichever
worker trains it, with no broker fan-out. Each open stream holds one gunicorn thread: at most
MAX_EVENT_STREAMS per API process (503 + Retry-After beyond), and `bps api` runs that many
threads more than GUNICORN_THREADS, so streams never take the threads other requests need.

Every event's `id:` is the stream's cursor, "<last epoch sent>.<last status sent>": a reconnect
with `Last-Event-ID` resumes after it without any state kept on the server.
"""
from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from flask import current_app
from sqlalchemy import select

from bps.config import Settings
from bps.db import session_scope
from bps.models import JOB_STATUSES, TERMINAL_STATUSES, Epoch, Job
from bps.problems import BadRequest, ServiceUnavailable
from service.http import dump
from service.job_service import epoch_resource, get_job
from service.schemas import JobOut

KEEPALIVE_S = 15.0  # a comment line this often: proxies keep the connection, a gone client is noticed
STREAM_RETRY_AFTER_S = 5
EVENT_STREAM_SLOTS = "bps.event_streams"  # the app.extensions key of its stream semaphore
_CURSOR = re.compile(r"^(\d{1,9})\.([a-z]*)$")


@dataclass
class Cursor:
    epoch: int = 0  # the last epoch sent
    status: str = ""  # the last status sent ("" before the first)

    @property
    def event_id(self) -> str:
        return f"{self.epoch}.{self.status}"


def parse_cursor(last_event_id: str | None) -> Cursor:
    if not last_event_id:
        return Cursor()
    match = _CURSOR.match(last_event_id.strip())
    if match is None or (match[2] and match[2] not in JOB_STATUSES):
        raise BadRequest(f"Last-Event-ID {last_event_id[:80]!r} is not an id this stream sent "
                         "(expected '<epoch>.<status>')", loc=["header", "Last-Event-ID"])
    return Cursor(int(match[1]), match[2])


def _take_slot(limit: int) -> Callable[[], None]:
    """The release function of one of the process's `limit` stream slots, or 503. The slots are
    the app's (one app per API process), a semaphore made at its first stream."""
    slot = current_app.extensions.get(EVENT_STREAM_SLOTS)
    if slot is None:  # setdefault: of two first streams at once, both get the one stored
        slot = current_app.extensions.setdefault(EVENT_STREAM_SLOTS, threading.BoundedSemaphore(limit))
    if not slot.acquire(blocking=False):
        raise ServiceUnavailable(
            f"this API process already serves {limit} event streams (MAX_EVENT_STREAMS); retry later "
            "or poll GET /v1/jobs/{id}", headers={"Retry-After": str(STREAM_RETRY_AFTER_S)})
    return slot.release


def sse(event: str, event_id: str, data: Any) -> str:
    return f"event: {event}\nid: {event_id}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


def _poll(database_url: str, job_id: str, cursor: Cursor) -> tuple[str | None, dict | None, list[dict]]:
    """(status, the Job if its status changed, epochs after the cursor). Status is read before
    the epochs: a terminal status read first means every epoch is already committed."""
    with session_scope(database_url) as session:
        row = session.execute(select(Job.status, Job.epoch).where(Job.id == job_id)).first()
        if row is None:  # deleted while streaming
            return None, None, []
        status, last_epoch = row
        job = dump(JobOut, session.get(Job, job_id)) if status != cursor.status else None
        epochs = []
        if last_epoch > cursor.epoch:
            rows = session.scalars(select(Epoch).where(Epoch.job_id == job_id, Epoch.epoch > cursor.epoch)
                                   .order_by(Epoch.epoch))
            epochs = [epoch_resource(r) for r in rows]
    return status, job, epochs


def _frames(cursor: Cursor, status: str, job: dict | None, epochs: list[dict]) -> str:
    """The events of one poll, advancing `cursor`: a new non-terminal status before the epochs
    (running, then its epochs), a terminal one after them (the last event of the stream)."""
    frames = []

    def status_frame() -> None:
        cursor.status = status
        frames.append(sse("status", cursor.event_id, job))

    if job is not None and status not in TERMINAL_STATUSES:
        status_frame()
    for epoch in epochs:
        cursor.epoch = epoch["epoch"]
        frames.append(sse("epoch", cursor.event_id, epoch))
    if job is not None and status in TERMINAL_STATUSES:
        status_frame()
    return "".join(frames)


def _stream(database_url: str, job_id: str, cursor: Cursor, poll_s: float) -> Iterator[str]:
    yield f"retry: {int(poll_s * 4000)}\n\n"
    quiet_since = time.monotonic()
    while True:
        status, job, epochs = _poll(database_url, job_id, cursor)
        if status is None:
            return
        frames = _frames(cursor, status, job, epochs)
        if frames:
            quiet_since = time.monotonic()
            yield frames
        elif time.monotonic() - quiet_since >= KEEPALIVE_S:
            quiet_since = time.monotonic()
            yield ": keepalive\n\n"
        if status in TERMINAL_STATUSES and cursor.status == status:
            return
        time.sleep(poll_s)


class EventStream:
    """The WSGI body: the server calls close() when the stream ends or the client goes (even
    before the first event), which gives the slot back exactly once."""

    def __init__(self, events: Iterator[str], release: Callable[[], None]) -> None:
        self._events, self._release = events, release

    def __iter__(self) -> EventStream:
        return self

    def __next__(self) -> str:
        return next(self._events)

    def close(self) -> None:
        release, self._release = self._release, None
        self._events.close()  # type: ignore[attr-defined]
        if release is not None:
            release()


def open_stream(*, session: Any, tenant_id: str, job_id: str, last_event_id: str | None,
                settings: Settings) -> EventStream:
    """The event stream of the tenant's job (404 otherwise; 400 for a foreign Last-Event-ID;
    503 when the process's streams are all taken). Checks run before the first byte is sent."""
    job = get_job(session=session, tenant_id=tenant_id, job_id=job_id)
    cursor = parse_cursor(last_event_id)
    release = _take_slot(settings.max_event_streams)
    return EventStream(_stream(settings.database_url, job.id, cursor, settings.event_poll_interval_s), release)
