"""One page of a list query and the total it was cut from (for X-Total-Count and Link)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session


@dataclass(frozen=True)
class Page:
    items: list[Any]
    total: int
    limit: int
    offset: int


def fetch_page(session: Session, query: Select, *, limit: int, offset: int) -> Page:
    """`query` (ordered) cut to [offset, offset + limit), and the number of rows it selects."""
    total = session.scalar(select(func.count()).select_from(query.order_by(None).subquery())) or 0
    items = list(session.scalars(query.limit(limit).offset(offset))) if offset < total else []
    return Page(items, total, limit, offset)
