"""Asynchronous predictions share the jobs' recovery: the reaper republishes one that was never
published or whose worker went silent (as bps.run_prediction), fails one out of attempts, and
a claim is fenced: a run that lost its prediction stores nothing more."""
from __future__ import annotations

import os
from datetime import timedelta

import numpy as np
import pytest
from sqlalchemy import event, select
from sqlalchemy.engine import make_url

from bps.db import engine, session_scope
from bps.models import Job, Model, Prediction, PredictionChunk, Tenant, utcnow
from worker import prediction_store
from worker.queue import celery_for
from worker.registry import reap


def add_prediction(settings, **values) -> str:  # noqa: ANN001, ANN003
    with session_scope(settings.database_url) as session:
        tenant = Tenant(name=f"t-{utcnow().timestamp()}")
        session.add(tenant)
        session.flush()
        job = Job(tenant_id=tenant.id, dataset_id="d", status="succeeded", spec={})
        session.add(job)
        session.flush()
        model = Model(tenant_id=tenant.id, job_id=job.id, task="classification", spec={}, weights=b"")
        session.add(model)
        session.flush()
        row = Prediction(tenant_id=tenant.id, model_id=model.id, n=30, predictions=[], dataset_id="d",
                         **{"status": "queued", "progress": 0.0, **values})
        session.add(row)
        session.flush()
        return row.id


def task_messages(settings) -> list[tuple[str, list]]:  # noqa: ANN001
    with celery_for(settings).connection_for_read() as connection:
        queue = connection.SimpleQueue("cpu")
        messages = []
        while queue.qsize():
            message = queue.get(timeout=1)
            messages.append((message.headers["task"], message.decode()[0]))
            message.ack()
        return messages


def test_the_reaper_republishes_lost_predictions_and_fails_those_out_of_attempts(settings) -> None:  # noqa: ANN001
    long_ago = utcnow() - timedelta(seconds=settings.job_heartbeat_timeout_s + 60)
    never_published = add_prediction(settings, created_at=long_ago)
    silent = add_prediction(settings, status="running", attempt=1, heartbeat_at=long_ago, published_at=long_ago)
    exhausted = add_prediction(settings, status="running", attempt=settings.job_max_attempts, heartbeat_at=long_ago)
    assert reap(settings) == 2
    assert sorted(task_messages(settings)) == sorted([("bps.run_prediction", [never_published]),
                                                      ("bps.run_prediction", [silent])])
    with session_scope(settings.database_url) as session:
        failed = session.get(Prediction, exhausted)
        assert failed.status == "failed" and "stopped responding" in failed.error


def test_a_run_that_lost_its_prediction_stores_nothing(settings) -> None:  # noqa: ANN001
    prediction_id = add_prediction(settings)
    first = prediction_store.claim_prediction(settings, prediction_id, "first")
    assert first is not None and prediction_store.claim_prediction(settings, prediction_id, "second") is None
    with prediction_store.chunk_connection(settings) as connection:
        assert prediction_store.record_chunk(connection, first, 0, np.zeros((10, 2), np.float32), 10)
    with session_scope(settings.database_url) as session:  # its worker went silent: another run takes it
        session.get(Prediction, prediction_id).heartbeat_at = utcnow() - timedelta(days=1)
    second = prediction_store.claim_prediction(settings, prediction_id, "second")
    assert (second.attempt, second.chunks_done, second.rows_done) == (2, 1, 10)
    with prediction_store.chunk_connection(settings) as connection:
        assert not prediction_store.record_chunk(connection, first, 1, np.zeros((10, 2), np.float32), 20)
    assert prediction_store.heartbeat(settings, prediction_id, first.attempt) == (False, False)
    assert not prediction_store.finish_prediction(settings, prediction_id, first.attempt, "succeeded")
    with session_scope(settings.database_url) as session:
        assert list(session.scalars(select(PredictionChunk.seq))) == [0]


def writer_checkpoint_pages(connection) -> int:  # noqa: ANN001
    pages = connection.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar()
    connection.rollback()  # no transaction left open (an invalidated one must be rolled back)
    return pages


def test_a_chunks_commit_leaves_the_checkpoint_to_the_next_other_commit(settings) -> None:  # noqa: ANN001
    """With a checkpoint due after every commit (wal_autocheckpoint=1) on the shared pool's
    connections, the database file does not grow when chunks are stored (their pages stay in
    the WAL: the writer's connections are not the pool's), and does at the heartbeat's commit."""
    prediction_id = add_prediction(settings)
    job = prediction_store.claim_prediction(settings, prediction_id, "first")
    bind = engine(settings.database_url)
    path = make_url(settings.database_url).database
    with bind.connect() as connection:
        connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        connection.commit()

    def checkpoint_every_commit(dbapi_connection, _record, _proxy) -> None:  # noqa: ANN001
        dbapi_connection.execute("PRAGMA wal_autocheckpoint=1")

    event.listen(bind, "checkout", checkpoint_every_commit)
    try:
        before = os.path.getsize(path)
        with prediction_store.chunk_connection(settings) as connection:
            for seq in range(3):
                assert prediction_store.record_chunk(connection, job, seq, np.ones((20_000, 10)), 20_000 * (seq + 1))
            assert os.path.getsize(path) == before
        assert prediction_store.heartbeat(settings, prediction_id, job.attempt) == (True, False)
        assert os.path.getsize(path) > before + 3 * 20_000 * 10 * 4  # half the chunks' 4.8 MB
    finally:
        event.remove(bind, "checkout", checkpoint_every_commit)


def test_only_the_writers_own_connections_have_the_checkpoint_off_reconnects_too(settings) -> None:  # noqa: ANN001
    """The writer's engine is one per database and process, set on every connection it makes
    (a connection that replaces an invalidated one as well); the shared pool's keep SQLite's
    default, before, beside and after a run's."""
    with engine(settings.database_url).connect() as shared:
        default = writer_checkpoint_pages(shared)
    with prediction_store.chunk_connection(settings) as first, prediction_store.chunk_connection(settings) as second:
        assert first.engine is second.engine is not engine(settings.database_url)
        assert writer_checkpoint_pages(first) == writer_checkpoint_pages(second) == 0
        first.invalidate()
        assert writer_checkpoint_pages(first) == 0
        with engine(settings.database_url).connect() as shared:
            assert writer_checkpoint_pages(shared) == default != 0
    with engine(settings.database_url).connect() as shared:
        assert writer_checkpoint_pages(shared) == default


def test_dispose_all_drops_the_writers_engine(settings) -> None:  # noqa: ANN001
    """No engine (and no pooled connection) is left per database once the process is done with it."""
    from bps.db import dispose_all  # noqa: PLC0415

    with prediction_store.chunk_connection(settings) as connection:
        used = connection.engine
    assert used.pool.checkedin() == 1
    dispose_all()
    assert used.pool.checkedin() == 0
    with prediction_store.chunk_connection(settings) as connection:
        assert connection.engine is not used


def test_the_writer_connection_reconnects_after_it_was_invalidated(settings) -> None:  # noqa: ANN001
    """A retry after a lost connection (with_db_retries around record_chunk) reuses the run's
    Connection: once invalidated, its next chunk goes through a new DBAPI connection."""
    prediction_id = add_prediction(settings)
    job = prediction_store.claim_prediction(settings, prediction_id, "first")
    with prediction_store.chunk_connection(settings) as connection:
        assert prediction_store.record_chunk(connection, job, 0, np.ones((5, 3)), 5)
        connection.invalidate()
        assert prediction_store.record_chunk(connection, job, 1, np.ones((5, 3)), 10)
    with session_scope(settings.database_url) as session:
        seqs = session.scalars(select(PredictionChunk.seq).where(PredictionChunk.prediction_id == prediction_id))
        assert sorted(seqs) == [0, 1]


@pytest.mark.postgres
def test_postgresql_stores_chunks_through_the_shared_engine(postgres_settings) -> None:  # noqa: ANN001
    """The pragmas are SQLite's: elsewhere the writer takes the shared pool's connection."""
    prediction_id = add_prediction(postgres_settings)
    job = prediction_store.claim_prediction(postgres_settings, prediction_id, "first")
    with prediction_store.chunk_connection(postgres_settings) as connection:
        assert connection.engine is engine(postgres_settings.database_url)
        assert prediction_store.record_chunk(connection, job, 0, np.ones((5, 3)), 5)
    with session_scope(postgres_settings.database_url) as session:
        assert session.get(Prediction, prediction_id).rows_done == 5
