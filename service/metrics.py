"""GET /metrics (no API key; METRICS_ENABLED=0 leaves it out: 404), request timing, and the
request id of every API line and response (X-Request-ID, taken from the request or made).
What is measured where: bps/metrics.py."""
from __future__ import annotations

import re
import time
import uuid

from flask import Blueprint, Flask, Response, current_app, g, request

from bps.logs import bind, unbind
from bps.metrics import ProcessMetrics, ServiceCollector, exposition
from service.http import db, settings

REQUEST_ID_HEADER = "X-Request-ID"
# A caller's id is kept when it is a plain token (it ends up in logs and a response header).
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
UNMATCHED_ROUTE = "<unmatched>"
blueprint = Blueprint("metrics", __name__)


def process_metrics() -> ProcessMetrics:
    return current_app.extensions["bps_metrics"]


def _broker_queue_sizes() -> dict[str, int] | None:
    from worker.registry import broker_queue_sizes  # noqa: PLC0415

    return broker_queue_sizes(settings())


@blueprint.get("/metrics")
def metrics() -> Response:
    collectors = [process_metrics().collector(), ServiceCollector(settings(), db(), _broker_queue_sizes)]
    body, content_type = exposition(collectors)
    return Response(body, content_type=content_type)


# A label per arbitrary method a client sends would grow the series without bound.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def _start_request() -> None:
    given = request.headers.get(REQUEST_ID_HEADER, "")
    g.request_id = given if _REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
    g.request_started = time.perf_counter()
    g.log_context_token = bind(request_id=g.request_id)


def _finish_request(response: Response) -> Response:
    response.headers[REQUEST_ID_HEADER] = g.get("request_id") or uuid.uuid4().hex
    started = g.get("request_started")
    if started is not None:
        route = request.url_rule.rule if request.url_rule is not None else UNMATCHED_ROUTE
        method = request.method if request.method in KNOWN_METHODS else "other"
        process_metrics().http_seconds.labels(method, route, str(response.status_code)).observe(
            time.perf_counter() - started)
    return response


def _end_request(_exc: BaseException | None = None) -> None:
    """The thread serves other requests next: the request id is unbound again."""
    token = g.pop("log_context_token", None)
    if token is not None:
        unbind(token)


def install_metrics(app: Flask) -> None:
    """Request ids always; timing and GET /metrics when METRICS_ENABLED (the default)."""
    app.extensions["bps_metrics"] = ProcessMetrics()
    app.before_request(_start_request)
    app.after_request(_finish_request)
    app.teardown_request(_end_request)
    if app.config["BPS_SETTINGS"].metrics_enabled:
        app.register_blueprint(blueprint)
