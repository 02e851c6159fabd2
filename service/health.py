"""GET /healthz (no auth): the database with SELECT 1, the broker with a short connection
and one read of its queues."""
from __future__ import annotations

import threading

from flask import Blueprint, jsonify
from sqlalchemy import text

from bps.config import Settings
from bps.problems import ServiceUnavailable
from service.http import db, settings

BROKER_TIMEOUT_S = 1.0
blueprint = Blueprint("health", __name__)


def check_database() -> str:
    """"ok", "unreachable" (connection refused or lost, file unopenable) or "error: <type>"."""
    from bps.db import is_database_unavailable  # noqa: PLC0415

    try:
        db().execute(text("SELECT 1"))
        return "ok"
    except ServiceUnavailable:
        return "unreachable"
    except Exception as exc:  # noqa: BLE001  (any failure is reported, never raised)
        return "unreachable" if is_database_unavailable(exc) else f"error: {type(exc).__name__}"


def _probe_broker(settings: Settings, result: list[str]) -> None:
    """Through the publisher's app (its transport and options: the embedded broker's engine is
    kombu's one per URL, in a class-level dict, made by the first connection to open it, so it
    must get the WAL connector), then one passive declare: it reads the embedded broker's table, where
    ensure_connection alone never opens the database file. A missing queue still answered."""
    from worker.celery_app import QUEUES  # noqa: PLC0415
    from worker.queue import celery_for  # noqa: PLC0415
    from worker.registry import waiting_messages  # noqa: PLC0415

    try:
        with celery_for(settings).connection_for_read(connect_timeout=BROKER_TIMEOUT_S) as connection:
            connection.ensure_connection(max_retries=0, timeout=BROKER_TIMEOUT_S)
            waiting_messages(connection.default_channel, QUEUES[0])
        result.append("ok")
    except Exception as exc:  # noqa: BLE001
        result.append(f"error: {type(exc).__name__}")


def check_broker(settings: Settings) -> str:
    """Runs in a daemon thread so a broker that does not answer cannot hang the request."""
    result: list[str] = []
    probe = threading.Thread(target=_probe_broker, args=(settings, result), daemon=True)
    probe.start()
    probe.join(BROKER_TIMEOUT_S + 0.5)
    return result[0] if result else "error: timeout"


def live_worker_list() -> list[dict]:
    """The workers whose heartbeat is recent, with what they can run (GPU first)."""
    from bps.workers import describe, live_workers  # noqa: PLC0415

    return [describe(w) for w in live_workers(session=db(), max_age_s=settings().worker_heartbeat_timeout_s)]


@blueprint.get("/healthz")
def healthz():  # noqa: ANN201
    database = check_database()
    broker = check_broker(settings())
    status = "ok" if database == "ok" and broker == "ok" else ("degraded" if database == "ok" else "unavailable")
    workers = live_worker_list() if database == "ok" else []
    body = {"status": status, "database": database, "broker": broker, "workers": workers}
    return jsonify(body), 200 if database == "ok" else 503
