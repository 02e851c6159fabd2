"""Errors a client can act on, raised by service functions and turned into
application/problem+json (RFC 9457) by service/errors.py. No Flask here."""
from __future__ import annotations

from typing import Any


class ProblemError(Exception):
    """`errors` is a list of {"loc": [...], "msg": "..."}; `headers` extra response headers;
    `members` extra members of the problem body (RFC 9457 extensions a client can read)."""

    status = 400
    title = "Bad Request"

    def __init__(
        self,
        detail: str,
        *,
        errors: list[dict[str, Any]] | None = None,
        loc: list[Any] | None = None,
        status: int | None = None,
        headers: dict[str, str] | None = None,
        members: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        if status is not None:
            self.status = status
        if errors is None:
            errors = [{"loc": list(loc) if loc is not None else [], "msg": detail}]
        self.errors = errors
        self.headers = headers or {}
        self.members = members or {}


class BadRequest(ProblemError):
    status, title = 400, "Bad Request"


class NotFound(ProblemError):
    status, title = 404, "Not Found"


class Conflict(ProblemError):
    status, title = 409, "Conflict"


class PayloadTooLarge(ProblemError):
    status, title = 413, "Payload Too Large"


class UnsupportedMediaType(ProblemError):
    status, title = 415, "Unsupported Media Type"


class Unprocessable(ProblemError):
    status, title = 422, "Unprocessable Content"


class TooManyRequests(ProblemError):
    """A quota or rate limit; `retry_after_s` goes out as the Retry-After header."""

    status, title = 429, "Too Many Requests"

    def __init__(self, detail: str, *, retry_after_s: int, loc: list[Any] | None = None) -> None:
        super().__init__(detail, loc=loc, headers={"Retry-After": str(max(1, int(retry_after_s)))})


class ServiceUnavailable(ProblemError):
    status, title = 503, "Service Unavailable"
