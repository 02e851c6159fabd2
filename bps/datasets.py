"""Datasets: parse and profile an upload, store its bytes in DatasetChunk rows (so a worker
on another host needs only DATABASE_URL), list, get, delete, load. Every function that a
client reaches is scoped to a tenant: another tenant's id is NotFound, as a missing one."""
from __future__ import annotations

import hashlib
from typing import IO

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session, defer

from bps.dataset_files import ParsedDataset, parse_dataset
from bps.listing import Page, fetch_page
from bps.models import Dataset, DatasetChunk, Job
from bps.tenants import get_owned
from bps.problems import Conflict, NotFound, PayloadTooLarge

ACTIVE_STATUSES = ("queued", "running")
READ_BLOCK = 1024 * 1024


def read_limited(stream: IO[bytes], *, limit: int) -> bytes:
    """Read `stream` in blocks, refusing (413) as soon as more than `limit` bytes arrive."""
    parts: list[bytes] = []
    total = 0
    while True:
        block = stream.read(READ_BLOCK)
        if not block:
            return b"".join(parts)
        total += len(block)
        if total > limit:
            raise PayloadTooLarge(
                f"the upload is larger than the limit of {limit} bytes (MAX_UPLOAD_BYTES)", loc=["file"]
            )
        parts.append(block)


def create_dataset(
    *,
    session: Session,
    tenant_id: str,
    raw: bytes,
    filename: str,
    name: str | None,
    chunk_bytes: int,
    max_rows: int,
    max_array_bytes: int,
) -> Dataset:
    parsed: ParsedDataset = parse_dataset(raw, filename, max_rows=max_rows, max_array_bytes=max_array_bytes)
    dataset = Dataset(
        tenant_id=tenant_id,
        name=(name or filename or "dataset").replace("\x00", "")[:300] or "dataset",  # PostgreSQL text has no NUL
        format=parsed.format,
        n_rows=parsed.n_rows,
        size_bytes=len(raw),
        sha256=hashlib.sha256(raw).hexdigest(),
        columns=parsed.columns,
        n_columns=len(parsed.columns),
        shapes=parsed.shapes,
    )
    session.add(dataset)
    session.flush()
    for seq, start in enumerate(range(0, len(raw), max(1, chunk_bytes))):
        session.add(DatasetChunk(dataset_id=dataset.id, seq=seq, data=raw[start : start + chunk_bytes]))
    session.flush()
    return dataset


def get_dataset(*, session: Session, tenant_id: str, dataset_id: str) -> Dataset:
    return get_owned(session, Dataset, tenant_id, dataset_id, "dataset")


def list_datasets(*, session: Session, tenant_id: str, limit: int = 100, offset: int = 0) -> Page:
    """Newest first; the column profiles are not loaded (a wide dataset's are megabytes)."""
    query = (
        select(Dataset)
        .options(defer(Dataset.columns))
        .where(Dataset.tenant_id == tenant_id)
        .order_by(Dataset.created_at.desc(), Dataset.id)
    )
    return fetch_page(session, query, limit=limit, offset=offset)


def delete_dataset(*, session: Session, tenant_id: str, dataset_id: str) -> None:
    """Delete a dataset and its bytes; 409 while a queued or running job still needs it."""
    dataset = get_dataset(session=session, tenant_id=tenant_id, dataset_id=dataset_id)
    active = session.scalar(
        select(func.count()).select_from(Job).where(Job.dataset_id == dataset.id, Job.status.in_(ACTIVE_STATUSES))
    )
    if active:
        raise Conflict(
            f"dataset {dataset_id} is still needed by {active} queued or running job(s); cancel them first",
            loc=["path", "dataset_id"],
        )
    session.execute(delete(DatasetChunk).where(DatasetChunk.dataset_id == dataset.id))
    session.delete(dataset)
    session.flush()


def load_dataset_bytes(*, session: Session, dataset_id: str) -> bytes:
    """The uploaded bytes of a dataset, joined from its chunks (for the worker; not scoped)."""
    chunks = session.scalars(
        select(DatasetChunk.data).where(DatasetChunk.dataset_id == dataset_id).order_by(DatasetChunk.seq)
    ).all()
    if not chunks and session.get(Dataset, dataset_id) is None:
        raise NotFound(f"dataset {dataset_id} not found (was it deleted?)", loc=["dataset_id"])
    return b"".join(chunks)
