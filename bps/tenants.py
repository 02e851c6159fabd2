"""Tenants and API keys. Keys are shown once; only their sha256 hex is stored."""
from __future__ import annotations

import hashlib
import secrets
from typing import TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session

from bps.models import ApiKey, Tenant
from bps.problems import NotFound

T = TypeVar("T")

KEY_PREFIX = "bps_"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def get_or_create_tenant(*, session: Session, tenant_name: str) -> Tenant:
    name = tenant_name.strip()
    if not name:
        raise ValueError("a tenant name must not be empty")
    tenant = session.scalar(select(Tenant).where(Tenant.name == name))
    if tenant is None:
        tenant = Tenant(name=name)
        session.add(tenant)
        session.flush()
    return tenant


def create_api_key(*, session: Session, tenant_name: str) -> str:
    """Create tenant `tenant_name` if new, add a key to it and return the plaintext key
    (the only time it is ever visible). The caller commits."""
    tenant = get_or_create_tenant(session=session, tenant_name=tenant_name)
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    session.add(ApiKey(tenant_id=tenant.id, key_hash=hash_key(key), prefix=key[:12]))
    session.flush()
    return key


def authenticate(*, session: Session, key: str) -> str | None:
    """The tenant id owning `key`, or None for an unknown or revoked key."""
    return tenant_of_key_hash(session=session, key_hash=hash_key(key)) if key else None


def tenant_of_key_hash(*, session: Session, key_hash: str) -> str | None:
    """One indexed column read, no ORM object (it runs on every API request). Not cached, so a
    revoked key is refused at once."""
    return session.scalar(select(ApiKey.tenant_id).where(ApiKey.key_hash == key_hash, ApiKey.revoked_at.is_(None)))


def get_owned(session: Session, model: type[T], tenant_id: str, row_id: str, what: str) -> T:
    """The tenant's row of `model` with id `row_id`; another tenant's id is a 404 exactly like
    a missing one (CONTRACT §2). `what` names it in the message and the loc (path `{what}_id`)."""
    row = session.scalar(select(model).where(model.id == row_id, model.tenant_id == tenant_id))
    if row is None:
        raise NotFound(f"{what} {row_id} not found", loc=["path", f"{what}_id"])
    return row
