"""Request rate per API key: a fixed one-minute window of RATE_LIMIT_PER_MINUTE requests.

Semantics: requests are counted per key in windows aligned to the clock minute; the request
that goes over the limit, and every later one in that minute, is answered 429 with
`Retry-After` = the seconds left in the window. With a Redis broker (BROKER_URL=redis://…)
the counter lives in Redis (INCR + EXPIRE), so the limit holds across every API process;
otherwise, or while Redis does not answer, each process counts on its own (the limit then
applies per process). RATE_LIMIT_PER_MINUTE=0 turns the limit off.
"""
from __future__ import annotations

import logging
import math
import os
import threading
import time
from typing import Any

from bps.problems import TooManyRequests

log = logging.getLogger(__name__)
WINDOW_S = 60
REDIS_TIMEOUT_S = 0.25
REDIS_RETRY_AFTER_FAILURE_S = 30.0


class LocalCounter:
    """Per-process counts of the current window, keyed by (key, window)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, int], int] = {}

    def incr(self, key: str, window: int) -> int:
        with self._lock:
            if len(self._counts) > 10_000:  # drop old windows
                self._counts = {k: v for k, v in self._counts.items() if k[1] >= window}
            count = self._counts.get((key, window), 0) + 1
            self._counts[(key, window)] = count
            return count


class RedisCounter:
    """Counts in Redis; raises the client's error when Redis does not answer."""

    def __init__(self, url: str) -> None:
        import redis  # noqa: PLC0415

        self._client: Any = redis.Redis.from_url(url, socket_timeout=REDIS_TIMEOUT_S,
                                                 socket_connect_timeout=REDIS_TIMEOUT_S)

    def incr(self, key: str, window: int) -> int:
        name = f"bps:rate:{key}:{window}"
        pipe = self._client.pipeline()
        pipe.incr(name)
        pipe.expire(name, WINDOW_S + 5)
        count, _ = pipe.execute()
        return int(count)


class RateLimiter:
    def __init__(self, limit_per_minute: int, broker_url: str) -> None:
        self.limit = limit_per_minute
        self._local = LocalCounter()
        self._redis = RedisCounter(broker_url) if broker_url.startswith(("redis://", "rediss://")) else None
        self._redis_down_until = 0.0

    def _count(self, key: str, window: int) -> int:
        if self._redis is not None and time.monotonic() >= self._redis_down_until:
            try:
                return self._redis.incr(key, window)
            except Exception:  # noqa: BLE001  (the limit must not take the API down with Redis)
                log.warning("rate limit: Redis unavailable; counting per process for %.0f s",
                            REDIS_RETRY_AFTER_FAILURE_S)
                self._redis_down_until = time.monotonic() + REDIS_RETRY_AFTER_FAILURE_S
        return self._local.incr(key, window)

    def check(self, key: str, now: float | None = None) -> None:
        """Count one request of `key` (a key hash); raise TooManyRequests past the limit."""
        if self.limit <= 0:
            return
        now = time.time() if now is None else now
        window = int(now // WINDOW_S)
        if self._count(key, window) > self.limit:
            retry_after = math.ceil((window + 1) * WINDOW_S - now)
            raise TooManyRequests(
                f"more than {self.limit} requests this minute for this API key (RATE_LIMIT_PER_MINUTE); "
                f"retry in {retry_after} s", retry_after_s=retry_after, loc=["header", "Authorization"])


_lock = threading.Lock()
_limiters: dict[tuple[int, str, int], RateLimiter] = {}


def limiter_for(limit_per_minute: int, broker_url: str) -> RateLimiter:
    """One limiter per settings and process (its Redis connections must not cross a fork)."""
    key = (limit_per_minute, broker_url, os.getpid())
    with _lock:
        if key not in _limiters:
            _limiters[key] = RateLimiter(limit_per_minute, broker_url)
        return _limiters[key]
