"""Every item of a list resource, page after page, following the answer's RFC 8288 Link
rel="next" (the server's `limit`/`offset` pages, X-Total-Count items in all)."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from bps_client.transport import Transport

DEFAULT_PAGE_SIZE = 100  # the server's default; it takes at most 1000


def each_item(transport: Transport, path: str, params: dict[str, Any], page_size: int) -> Iterator[dict]:
    """The items of `path` (newest first), one request per page. Only the next link's query is
    used, on the client's own URL: the key goes nowhere else, and a proxy in front of the API
    (whose Link names the host it saw) changes nothing. An item already yielded is skipped: one
    created while paging shifts the older ones onto the next page."""
    query: dict[str, Any] = {**{k: v for k, v in params.items() if v is not None}, "limit": page_size}
    seen: set[str] = set()
    while True:
        response = transport.request("GET", path, params=query)
        for item in response.json():
            if item.get("id") not in seen:
                seen.add(item.get("id"))
                yield item
        following = response.links.get("next")
        if not following:
            return
        query = dict(parse_qsl(urlsplit(following["url"]).query, keep_blank_values=True))
