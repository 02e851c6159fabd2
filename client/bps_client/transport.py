"""HTTP under the client: the base URL and key, timeouts, and retries with backoff on 429 and
503 (honouring Retry-After), on 502 and 504 for requests safe to repeat, and on connections that
could not be made."""
from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote

import httpx

from bps_client.errors import ApiError

RETRY_STATUSES = (429, 502, 503, 504)
# A proxy's 502/504 may come after the server acted: a POST repeated then could queue a second job.
NOT_ACTED_STATUSES = (429, 503)
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
MAX_RETRY_AFTER_S = 60.0


def path_id(value: str) -> str:
    """An id as one path segment (a `/`, `?` or `#` in it stays inside the segment)."""
    return quote(str(value), safe="")


def problem_of(response: httpx.Response) -> dict[str, Any]:
    """The problem+json body, or one made from the status when the body is not JSON."""
    try:
        body = json.loads(response.read() or b"null")
    except ValueError:
        body = None
    if isinstance(body, dict):
        return body
    return {"title": response.reason_phrase or f"HTTP {response.status_code}", "status": response.status_code,
            "detail": response.text[:300] if response.text else None, "errors": []}


def retryable(method: str, status: int) -> bool:
    """Whether an answer of `status` to `method` may be repeated without acting twice."""
    return status in (RETRY_STATUSES if method.upper() in IDEMPOTENT_METHODS else NOT_ACTED_STATUSES)


def retry_delay(response: httpx.Response | None, attempt: int, backoff_s: float) -> float:
    """Retry-After (seconds) when the server gave it, else exponential backoff."""
    header = response.headers.get("Retry-After") if response is not None else None
    if header is not None:
        try:
            return min(max(float(header), 0.0), MAX_RETRY_AFTER_S)
        except ValueError:
            pass
    return min(backoff_s * 2 ** attempt, MAX_RETRY_AFTER_S)


class Transport:
    """`api_key` goes with every request, as a header of the request rather than of `http`: a
    caller's own httpx.Client (`http`) sends it too and is left as it was given."""

    def __init__(self, url: str, api_key: str | None, *, timeout: float, retries: int, backoff_s: float,
                 http: httpx.Client | None = None) -> None:
        self.auth = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.retries, self.backoff_s = retries, backoff_s
        self.http = http or httpx.Client(base_url=url.rstrip("/"), timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def request(self, method: str, path: str, *, retry: bool = True, stream: bool = False,
                **kwargs: Any) -> httpx.Response:
        """The answer of a 2xx; ApiError otherwise (after the retries, when `retry`). stream=True:
        its body is left unread, for the caller to iterate and close."""
        retries = self.retries if retry else 0
        kwargs["headers"] = {**self.auth, **(kwargs.get("headers") or {})}
        for attempt in range(retries + 1):
            try:
                response = self.http.send(self.http.build_request(method, path, **kwargs), stream=stream)
            except (httpx.ConnectError, httpx.ConnectTimeout):  # never reached the server: safe to repeat
                if attempt == retries:
                    raise
                time.sleep(retry_delay(None, attempt, self.backoff_s))
                continue
            if retryable(method, response.status_code) and attempt < retries:
                response.close()
                time.sleep(retry_delay(response, attempt, self.backoff_s))
                continue
            if response.is_error:
                try:
                    raise ApiError(response.status_code, problem_of(response))
                finally:
                    response.close()
            return response
        raise AssertionError("unreachable")

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.request(method, path, **kwargs)
        return response.json() if response.content else None

    @contextmanager
    def stream(self, path: str, headers: dict[str, str], read_timeout: float) -> Iterator[httpx.Response]:
        """A streamed GET (no retries: the caller reconnects or falls back); ApiError on an error."""
        timeout = httpx.Timeout(self.http.timeout.connect or 10.0, read=read_timeout)
        with self.http.stream("GET", path, headers={**self.auth, **headers}, timeout=timeout) as response:
            if response.is_error:
                raise ApiError(response.status_code, problem_of(response))
            yield response


def sse_events(lines: Iterator[str]) -> Iterator[tuple[str, str | None, Any]]:
    """(event, id, JSON data) of each server-sent event in `lines`; comments and retry lines skipped."""
    event, event_id, data = "message", None, []
    for line in lines:
        if line == "":
            if data:
                yield event, event_id, json.loads("\n".join(data))
            event, data = "message", []
        elif line.startswith(":"):
            continue
        else:
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "event":
                event = value
            elif name == "id":
                event_id = value
            elif name == "data":
                data.append(value)
