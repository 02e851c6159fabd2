"""Tenants and API keys. Keys are shown once; only their sha256 hex is stored."""
from __future__ import annotations

import hashlib
import secrets
from datetime import datetime
from typing import NamedTuple, TypeVar

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from bps.models import ApiKey, Tenant, utcnow
from bps.problems import Conflict, NotFound

T = TypeVar("T")

KEY_PREFIX = "bps_"
MAX_TENANT_NAME = 200  # tenants.name is a String(200)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def get_or_create_tenant(*, session: Session, tenant_name: str) -> Tenant:
    name = tenant_name.strip()
    if not name:
        raise ValueError("a tenant name must not be empty")
    if len(name) > MAX_TENANT_NAME or not name.isprintable():
        raise ValueError(f"a tenant name is at most {MAX_TENANT_NAME} printable characters (no control characters)")
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


class KeyRow(NamedTuple):
    tenant: str
    key_id: str
    prefix: str
    created_at: datetime
    revoked_at: datetime | None


MIN_PREFIX = 6
_KEY_COLUMNS = (Tenant.name, ApiKey.id, ApiKey.prefix, ApiKey.created_at, ApiKey.revoked_at)


def list_api_keys(*, session: Session) -> list[KeyRow]:
    """Every key (never the key itself: only its id and first characters), by tenant then age."""
    rows = session.execute(select(*_KEY_COLUMNS).join(Tenant, Tenant.id == ApiKey.tenant_id)
                           .order_by(Tenant.name, ApiKey.created_at, ApiKey.id))
    return [KeyRow(*row) for row in rows]


def revoke_api_key(*, session: Session, key: str) -> KeyRow:
    """Revoke the one key whose id is `key`, or whose prefix starts with it (at least MIN_PREFIX
    characters); from then on it answers 401. Revoking a revoked key keeps its first date.
    NotFound when none matches, Conflict when several do."""
    text = key.strip()
    matches = ApiKey.id == text
    if len(text) >= MIN_PREFIX:
        matches = or_(matches, ApiKey.prefix.startswith(text, autoescape=True))
    rows = session.execute(select(*_KEY_COLUMNS).join(Tenant, Tenant.id == ApiKey.tenant_id).where(matches)).all()
    if not rows:
        raise NotFound(f"no API key has the id or prefix {text!r} (see `bps keys list`)", loc=["key"])
    if len(rows) > 1:
        raise Conflict(f"{len(rows)} keys start with {text!r}: give the key id (see `bps keys list`)", loc=["key"])
    row = KeyRow(*rows[0])
    session.execute(update(ApiKey).where(ApiKey.id == row.key_id, ApiKey.revoked_at.is_(None))
                    .values(revoked_at=utcnow()))
    return row


def authenticate(*, session: Session, key: str) -> str | None:
    """The tenant id owning `key`, or None for an unknown or revoked key."""
    return tenant_of_key_hash(session=session, key_hash=hash_key(key)) if key else None


def tenant_of_key_hash(*, session: Session, key_hash: str) -> str | None:
    """One indexed column read, no ORM object (it runs on every API request). Not cached, so a
    revoked key is refused at once."""
    return session.scalar(select(ApiKey.tenant_id).where(ApiKey.key_hash == key_hash, ApiKey.revoked_at.is_(None)))


def find_owned(session: Session, model: type[T], tenant_id: str, row_id: str) -> T | None:
    """The tenant's row of `model` with id `row_id`; None for another tenant's or a missing one."""
    return session.scalar(select(model).where(model.id == row_id, model.tenant_id == tenant_id))


def require_owned(session: Session, model: type, tenant_id: str, row_id: str, what: str) -> None:
    """get_owned's 404 without loading the row: one indexed id lookup, none of its blobs."""
    if session.scalar(select(model.id).where(model.id == row_id, model.tenant_id == tenant_id)) is None:
        raise _not_found(what, row_id)


def get_owned(session: Session, model: type[T], tenant_id: str, row_id: str, what: str) -> T:
    """The tenant's row of `model` with id `row_id`; another tenant's id is a 404 exactly like
    a missing one (CONTRACT §2). `what` names it in the message and the loc (path `{what}_id`)."""
    row = find_owned(session, model, tenant_id, row_id)
    if row is None:
        raise _not_found(what, row_id)
    return row


def _not_found(what: str, row_id: str) -> NotFound:
    """The 404 of get_owned and require_owned."""
    return NotFound(f"{what} {row_id} not found", loc=["path", f"{what}_id"])
