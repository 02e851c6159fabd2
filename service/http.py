"""Request helpers shared by the blueprints: settings, the request's DB session, the
caller's tenant, JSON bodies parsed into pydantic models."""
from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Callable
from typing import Any, TypeVar

from flask import Response, current_app, g, jsonify, request, url_for
from pydantic import BaseModel
from sqlalchemy.orm import Session

from bps.config import Settings
from bps.db import session_factory
from bps.problems import BadRequest, ServiceUnavailable, UnsupportedMediaType, Unprocessable

ModelT = TypeVar("ModelT", bound=BaseModel)
MAX_DOUBLE = sys.float_info.max


def settings() -> Settings:
    return current_app.config["BPS_SETTINGS"]


def db() -> Session:
    """One session per request, closed (rolled back if uncommitted) at teardown."""
    if "db" not in g:
        try:
            g.db = session_factory(settings().database_url)()
        except OSError:  # e.g. a SQLite directory that cannot be created
            raise ServiceUnavailable("the database is unavailable; retry in a few seconds",
                                     headers={"Retry-After": "5"}) from None
    return g.db


def close_db(_exc: BaseException | None = None) -> None:
    session = g.pop("db", None)
    if session is not None:
        session.rollback()
        session.close()


def tenant_id() -> str:
    return g.tenant_id


def json_body() -> Any:
    if not request.mimetype or not (request.mimetype == "application/json" or request.mimetype.endswith("+json")):
        raise UnsupportedMediaType(
            f"the body must be application/json, not {request.mimetype or 'absent'}", loc=["header", "Content-Type"]
        )
    raw = request.get_data(cache=True)
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}", loc=["body"]) from None
    if _may_hold_unusable_values(raw):
        _refuse_unusable_values(data)
    return data


_EXPONENTS = (re.compile(rb"e\+?[0-9]{3}"), re.compile(rb"E\+?[0-9]{3}"))  # a literal first: fast scans
_DIGITS_AS_ZERO = bytes.maketrans(b"123456789", b"000000000")


def _may_hold_unusable_values(raw: bytes) -> bool:
    """Whether the body may hold a NUL character or a number that is not a finite double: only
    then is it walked value by value (a 160 MB body of 10,000 x 784 floats is scanned in about
    a sixth of the time json.loads takes, and never walked)."""
    if json.detect_encoding(raw) != "utf-8" or any(token in raw for token in (b"\\u0000", b"NaN", b"Infinity")):
        return True
    return any(pattern.search(raw) for pattern in _EXPONENTS) or b"0" * 300 in raw.translate(_DIGITS_AS_ZERO)


def _unusable(value: Any) -> str | None:
    if isinstance(value, str) and "\x00" in value:
        return "holds a NUL character (\\u0000), which no field accepts"
    if isinstance(value, float) and not math.isfinite(value):
        return "is NaN, Infinity or beyond the range of a double, which no field accepts (send null for a missing value)"
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_DOUBLE:
        return "is beyond the range of a double, which no field accepts"
    return None


def _refuse_unusable_values(data: Any) -> None:
    """400 naming the first value (or key) that no field can take: a string with a NUL character
    (PostgreSQL text cannot hold one, so an id with it failed its query with a 500), or a number
    that is not a finite double (NaN and Infinity are not JSON; 1e400 and 10**400 overflowed)."""
    stack: list[tuple[Any, list[Any]]] = [(data, ["body"])]
    while stack:
        value, loc = stack.pop()
        problem = _unusable(value)
        if problem:
            raise BadRequest(f"a value in the body {problem}", loc=loc)
        items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
        for key, item in items:
            if isinstance(key, str) and "\x00" in key:
                raise BadRequest(f"a key in the body {_unusable(key)}", loc=loc)
            stack.append((item, [*loc, key]))


def refuse_nul_in_url() -> None:
    """before_request of /v1: a path or query parameter holding a NUL character is a 400 (it
    names nothing, and PostgreSQL text cannot hold one: its query would fail with a 500)."""
    for where, params in (("path", request.view_args or {}), ("query", request.args)):
        for name, value in params.items():
            if "\x00" in name or "\x00" in str(value):
                shown = name.replace("\x00", "")
                raise BadRequest(f"{where} parameter {shown!r} holds a NUL character", loc=[where, shown])


def parse_body(model: type[ModelT]) -> ModelT:
    data = json_body()
    if not isinstance(data, dict):
        raise Unprocessable("the body must be a JSON object", loc=["body"])
    return model.model_validate(data)


def dump(model: type[BaseModel], obj: Any) -> dict[str, Any]:
    return model.model_validate(obj).model_dump(mode="json")


def query_int(name: str, default: int, *, low: int, high: int) -> int:
    raw = request.args.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"query parameter {name!r} must be an integer", loc=["query", name]) from None
    if not low <= value <= high:
        raise BadRequest(f"query parameter {name!r} must be between {low} and {high}", loc=["query", name])
    return value


def query_choice(name: str, choices: tuple[str, ...], default: str | None = None) -> str | None:
    """Query parameter `name`, one of `choices` (`default` when absent; 400 naming them otherwise)."""
    value = request.args.get(name, default)
    if value is not None and value not in choices:
        raise BadRequest(f"query parameter {name!r} must be one of {list(choices)}, not {value[:40]!r}",
                         loc=["query", name])
    return value


def deleted(delete: Callable[..., None], **path: str) -> Response:
    """204 once `delete(session=, tenant_id=, **path)` is committed (the DELETE views)."""
    session = db()
    delete(session=session, tenant_id=tenant_id(), **path)
    session.commit()
    return Response(status=204)


def created(model: type[BaseModel], obj: Any, status: int, endpoint: str, **path: str) -> Response:
    """`obj` serialised as `model` with `status` (201/202) and a Location header for `endpoint`."""
    response = jsonify(dump(model, obj))
    response.status_code = status
    response.headers["Location"] = url_for(endpoint, **path)
    return response
