"""The one error handler: every error becomes application/problem+json (RFC 9457) with
`errors: [{loc, msg}]`. A 500 is a bug; it is logged and answered without internals."""
from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, json
from pydantic import ValidationError
from sqlalchemy.exc import DBAPIError
from werkzeug.exceptions import HTTPException

from bps.db import is_database_unavailable
from bps.problems import ProblemError

log = logging.getLogger(__name__)
PROBLEM_MIME = "application/problem+json"
DATABASE_RETRY_AFTER_S = 5


def problem_response(
    status: int, title: str, detail: str, errors: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None, members: dict[str, Any] | None = None,
) -> Response:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail, "errors": errors or [],
            **(members or {})}
    response = Response(json.dumps(body), status=status, mimetype=PROBLEM_MIME)
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def validation_errors(exc: ValidationError, prefix: str = "body") -> list[dict[str, Any]]:
    items = []
    for error in exc.errors(include_url=False, include_input=False):
        loc = [prefix, *[part for part in error["loc"]]]
        msg = error["msg"]
        if error["type"] == "extra_forbidden":
            msg = f"unknown field {loc[-1]!r}"
        items.append({"loc": loc, "msg": msg})
    return items


def _handle_problem(exc: ProblemError) -> Response:
    return problem_response(exc.status, exc.title, exc.detail, exc.errors, exc.headers, exc.members)


def _handle_validation(exc: ValidationError) -> Response:
    errors = validation_errors(exc)
    detail = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors[:5])
    return problem_response(422, "Unprocessable Content", f"the request body is invalid: {detail}", errors)


def _handle_http(exc: HTTPException) -> Response:
    status = exc.code or 500
    detail = exc.description or exc.name
    headers = {}
    if status == 405 and exc.valid_methods:  # type: ignore[attr-defined]
        headers["Allow"] = ", ".join(exc.valid_methods)  # type: ignore[attr-defined]
    if status == 413:
        detail = "the request body is larger than the upload limit (MAX_UPLOAD_BYTES)"
    return problem_response(status, exc.name, detail, [{"loc": [], "msg": detail}], headers)


def _handle_database(exc: DBAPIError) -> Response:
    if not is_database_unavailable(exc):
        return _handle_unexpected(exc)
    log.warning("database unavailable: %s", exc.__class__.__name__, exc_info=True)
    detail = "the database is unavailable; retry in a few seconds"
    return problem_response(503, "Service Unavailable", detail, [{"loc": [], "msg": detail}],
                            {"Retry-After": str(DATABASE_RETRY_AFTER_S)})


def _handle_unexpected(exc: Exception) -> Response:
    log.exception("unhandled error")
    return problem_response(500, "Internal Server Error", "an unexpected error occurred; it has been logged")


def register_error_handlers(app: Flask) -> None:
    app.register_error_handler(ProblemError, _handle_problem)
    app.register_error_handler(ValidationError, _handle_validation)
    app.register_error_handler(HTTPException, _handle_http)
    app.register_error_handler(DBAPIError, _handle_database)
    app.register_error_handler(Exception, _handle_unexpected)
