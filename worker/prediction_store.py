"""An asynchronous prediction's database writes, fenced like a job's (worker/job_store.py):
claimed by one conditional UPDATE, every later write conditional on `attempt`, each result
chunk inserted with the progress in ONE fenced transaction. The chunks hold consecutive rows in
`seq` order, so a run that takes over continues at the row after the stored chunks' rows (their
sum, read when it claims) with the next `seq`, and every row is stored exactly once."""
from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from sqlalchemy import Connection, bindparam, func, insert, or_, select, update

from bps.config import Settings
from bps.db import engine, session_scope
from bps.models import Prediction, PredictionChunk, utcnow
from worker.job_store import fence, takeover_condition, with_db_retries


@dataclass(frozen=True)
class PredictionSnapshot:
    id: str
    tenant_id: str
    attempt: int
    model_id: str
    dataset_id: str
    queue: str
    n: int
    chunks_done: int  # chunks stored by earlier attempts
    rows_done: int


def claim_prediction(settings: Settings, prediction_id: str, worker_id: str) -> PredictionSnapshot | None:
    """A queued prediction, or a running one whose worker went silent; None otherwise."""
    now = utcnow()
    claimable = or_(Prediction.status == "queued", takeover_condition(Prediction, settings, now))
    with session_scope(settings.database_url) as session:
        claimed = session.execute(
            update(Prediction).where(Prediction.id == prediction_id, claimable)
            .values(status="running", attempt=Prediction.attempt + 1, worker_id=worker_id, started_at=now,
                    heartbeat_at=now, error=None)
            .execution_options(synchronize_session=False)
        ).rowcount
        if claimed != 1:
            return None
        row = session.get(Prediction, prediction_id)
        chunks, rows = session.execute(
            select(func.count(), func.coalesce(func.sum(PredictionChunk.n_rows), 0))
            .where(PredictionChunk.prediction_id == prediction_id)).one()
        return PredictionSnapshot(id=row.id, tenant_id=row.tenant_id, attempt=row.attempt, model_id=row.model_id,
                                  dataset_id=str(row.dataset_id), queue=row.queue, n=row.n,
                                  chunks_done=int(chunks), rows_done=int(rows))


def heartbeat(settings: Settings, prediction_id: str, attempt: int) -> tuple[bool, bool]:
    """(still_owned, False): a prediction has no cancel."""
    with session_scope(settings.database_url) as session:
        owned = session.execute(update(Prediction).where(fence(Prediction, prediction_id, attempt))
                                .values(heartbeat_at=utcnow())).rowcount == 1
        return owned, False


def encode_outputs(outputs: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, np.ascontiguousarray(outputs), allow_pickle=False)
    return buffer.getvalue()


# record_chunk's statements, built once: per chunk only their parameters are bound (no
# construction and cache-key pass of two statements per chunk).
_MOVE_PROGRESS = update(Prediction).where(fence(Prediction, bindparam("job_id"), bindparam("job_attempt"))).values(
    rows_done=bindparam("new_rows_done"), progress=bindparam("new_progress"), heartbeat_at=bindparam("now"))
_INSERT_CHUNK = insert(PredictionChunk).values(prediction_id=bindparam("job_id"), seq=bindparam("chunk_seq"),
                                               n_rows=bindparam("chunk_rows"), outputs=bindparam("chunk_outputs"))


# SQLite: the chunk writer's connections (an engine of their own) leave the WAL's checkpoint to
# the next commit of another connection (the heartbeat's, or the finish's once the result is
# visible). Run by a chunk's commit (the WAL past 1,000 pages: about every 60 MB of chunks), the
# checkpoint held the writer in its copy and fsyncs while the products waited on its full queue.
# Set when a connection is made, so a reconnect keeps it and no other user gets it.
WRITER_SQLITE_PRAGMAS = ("wal_autocheckpoint=0",)


@contextlib.contextmanager
def chunk_connection(settings: Settings) -> Iterator[Connection]:
    """The chunk writer's one connection for a run, from its engine (WRITER_SQLITE_PRAGMAS)."""
    bind = engine(settings.database_url, sqlite_pragmas=WRITER_SQLITE_PRAGMAS)
    with with_db_retries(bind.connect, what="the chunk writer's connection") as connection:
        yield connection


def record_chunk(connection: Connection, job: PredictionSnapshot, seq: int, outputs: np.ndarray,
                 rows_done: int) -> bool:
    """Store chunk `seq` and move the progress, in one fenced transaction on `connection` (a
    chunk_connection); False (nothing written) when this attempt no longer owns the prediction."""
    with connection.begin():
        owned = connection.execute(_MOVE_PROGRESS, {
            "job_id": job.id, "job_attempt": job.attempt, "new_rows_done": rows_done,
            "new_progress": min(rows_done / max(job.n, 1), 1.0), "now": utcnow()}).rowcount == 1
        if owned:  # else the UPDATE changed nothing and nothing else is written
            connection.execute(_INSERT_CHUNK, {"job_id": job.id, "chunk_seq": seq, "chunk_rows": len(outputs),
                                               "chunk_outputs": encode_outputs(outputs)})
        return owned


def finish_prediction(settings: Settings, prediction_id: str, attempt: int, status: str, **values: object) -> bool:
    with session_scope(settings.database_url) as session:
        return session.execute(
            update(Prediction).where(fence(Prediction, prediction_id, attempt))
            .values(status=status, finished_at=utcnow(), **values)
        ).rowcount == 1

