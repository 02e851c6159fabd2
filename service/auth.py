"""Bearer API keys: every /v1 request names its tenant; unknown keys get a 401 problem."""
from __future__ import annotations

from flask import g, request

from bps.problems import ProblemError
from bps.tenants import hash_key, tenant_of_key_hash
from service.http import db, settings
from service.rate_limit import limiter_for


class Unauthorized(ProblemError):
    status, title = 401, "Unauthorized"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, loc=["header", "Authorization"], headers={"WWW-Authenticate": 'Bearer realm="bps"'})


def require_api_key() -> None:
    """before_request of the /v1 blueprint: sets g.tenant_id or raises 401; then counts the
    request against the key's rate limit (429 past RATE_LIMIT_PER_MINUTE)."""
    header = request.headers.get("Authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise Unauthorized("missing API key: send 'Authorization: Bearer <key>'")
    key_hash = hash_key(key.strip())  # hashed once: the lookup and the rate limiter use it
    tenant = tenant_of_key_hash(session=db(), key_hash=key_hash)
    if tenant is None:
        raise Unauthorized("the API key is not valid (unknown or revoked)")
    g.tenant_id = tenant
    config = settings()
    limiter_for(config.rate_limit_per_minute, config.broker_url).check(key_hash)
