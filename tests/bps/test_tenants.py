"""Tenants and keys: plaintext shown once, sha256 stored, revoked/unknown keys refused; a
tenant's rows: another tenant's id is a 404 like a missing one."""
from __future__ import annotations

import hashlib

import pytest

from bps.db import session_scope
from bps.models import ApiKey, Dataset, Tenant, utcnow
from bps.problems import NotFound
from bps.tenants import authenticate, create_api_key, get_or_create_tenant, require_owned


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


def test_require_owned_is_a_404_for_a_missing_row_and_another_tenants(settings) -> None:  # noqa: ANN001
    with session_scope(settings.database_url) as session:
        acme, globex = (get_or_create_tenant(session=session, tenant_name=name).id for name in ("acme", "globex"))
        dataset = Dataset(tenant_id=acme, name="d", format="csv", n_rows=0, size_bytes=0, sha256="0" * 64)
        session.add(dataset)
        session.flush()
        require_owned(session, Dataset, acme, dataset.id, "dataset")
        for tenant, row_id in ((globex, dataset.id), (acme, "missing")):
            with pytest.raises(NotFound) as error:
                require_owned(session, Dataset, tenant, row_id, "dataset")
            assert error.value.detail == f"dataset {row_id} not found"
            assert error.value.errors == [{"loc": ["path", "dataset_id"], "msg": error.value.detail}]
