"""Request helpers shared by the blueprints: settings, the request's DB session, the
caller's tenant, JSON bodies parsed into pydantic models."""
from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

from flask import Response, current_app, g, jsonify, request, url_for
from pydantic import BaseModel
from sqlalchemy.orm import Session

from bps.config import Settings
from bps.db import session_factory
from bps.problems import BadRequest, ServiceUnavailable, UnsupportedMediaType, Unprocessable

ModelT = TypeVar("ModelT", bound=BaseModel)


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
    if b"\\u0000" in raw or json.detect_encoding(raw) != "utf-8":  # JSON carries a NUL only escaped
        _refuse_nul_in_json(data)
    return data


NUL_IN_BODY = "the body holds a NUL character (\\u0000), which no field accepts"


def _refuse_nul_in_json(data: Any) -> None:
    """400 naming the first string (or key) that holds a NUL character: PostgreSQL text cannot
    hold one, so an id with a NUL would fail its query (a 500) instead of answering 404."""
    stack: list[tuple[Any, list[Any]]] = [(data, ["body"])]
    while stack:
        value, loc = stack.pop()
        if isinstance(value, str) and "\x00" in value:
            raise BadRequest(NUL_IN_BODY, loc=loc)
        items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
        for key, item in items:
            if isinstance(key, str) and "\x00" in key:
                raise BadRequest(NUL_IN_BODY, loc=loc)
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
