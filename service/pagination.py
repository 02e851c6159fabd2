"""`limit`/`offset` on every list, and the answer's X-Total-Count and RFC 8288 Link headers
(first, prev, next, last: absolute URLs keeping the request's other query parameters)."""
from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from flask import Response, jsonify, request

from bps.listing import Page
from service.http import query_int

DEFAULT_LIMIT, MAX_LIMIT, MAX_OFFSET = 100, 1000, 10**9


def page_params(default_limit: int = DEFAULT_LIMIT, max_limit: int = MAX_LIMIT) -> dict[str, int]:
    """{"limit", "offset"} from the query string (400 naming the parameter when out of range)."""
    return {"limit": query_int("limit", default_limit, low=1, high=max_limit),
            "offset": query_int("offset", 0, low=0, high=MAX_OFFSET)}


def _page_url(offset: int, limit: int) -> str:
    args = [(name, value) for name, value in request.args.items(multi=True) if name not in ("limit", "offset")]
    return f"{request.base_url}?{urlencode([*args, ('limit', limit), ('offset', offset)])}"


def link_header(page: Page) -> str:
    last = max(0, (page.total - 1) // page.limit * page.limit)
    rels = {"first": 0}
    if page.offset > 0:
        rels["prev"] = max(0, min(page.offset, page.total) - page.limit)
    if page.offset + page.limit < page.total:
        rels["next"] = page.offset + page.limit
    rels["last"] = last
    return ", ".join(f'<{_page_url(offset, page.limit)}>; rel="{rel}"' for rel, offset in rels.items())


def paged(body: Any, page: Page) -> Response:
    """`body` (the page's items, serialised) as JSON with X-Total-Count and Link."""
    response = jsonify(body)
    response.headers["X-Total-Count"] = str(page.total)
    response.headers["Link"] = link_header(page)
    return response
