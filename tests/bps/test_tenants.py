"""Tenants and keys: plaintext shown once, sha256 stored, revoked/unknown keys refused."""
from __future__ import annotations

import hashlib

from bps.db import session_scope
from bps.models import ApiKey, Tenant, utcnow
from bps.tenants import authenticate, create_api_key


def test_keys_are_stored_hashed_and_authenticate(settings) -> None:  # noqa: ANN001
    with session_scope(settings.database_url) as session:
        first = create_api_key(session=session, tenant_name="acme")
        second = create_api_key(session=session, tenant_name="acme")
        other = create_api_key(session=session, tenant_name="globex")
    with session_scope(settings.database_url) as session:
        assert session.query(Tenant).count() == 2
        stored = {row.key_hash for row in session.query(ApiKey)}
        assert hashlib.sha256(first.encode()).hexdigest() in stored and first not in stored
        acme = authenticate(session=session, key=first)
        assert acme is not None and authenticate(session=session, key=second) == acme
        assert authenticate(session=session, key=other) not in (None, acme)
        assert authenticate(session=session, key="bps_wrong") is None and authenticate(session=session, key="") is None
        session.query(ApiKey).filter_by(key_hash=hashlib.sha256(first.encode()).hexdigest()).update(
            {"revoked_at": utcnow()})
    with session_scope(settings.database_url) as session:
        assert authenticate(session=session, key=first) is None
        assert authenticate(session=session, key=second) == acme
