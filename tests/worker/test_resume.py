"""Checkpoints and takeover in the runner (SQLite, in-process, the real engine): a run that
takes over resumes after the last recorded epoch and ends exactly where an uninterrupted run
ends; fenced writes; the time limit; retried database writes."""
from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest
from sqlalchemy import select, update
from sqlalchemy.exc import OperationalError

from bps.checkpoints import decode_state
from bps.db import session_scope
from bps.models import Checkpoint, Epoch, Job, Model, utcnow
from tests.worker.test_runner import add_job, classifier_spec, job_row
from worker import job_store, runner
from worker.runner import run_job, time_limit_of


class WorkerDied(BaseException):
    """Stands for SIGKILL: escapes run_job's handlers, so the job is left `running`."""


def epochs_of(settings, job_id: str) -> list[tuple[int, int, float]]:
    with session_scope(settings.database_url) as session:
        rows = session.scalars(select(Epoch).where(Epoch.job_id == job_id).order_by(Epoch.epoch))
        return [(e.epoch, e.attempt, e.loss) for e in rows]


def model_weights(settings, job_id: str) -> dict[str, np.ndarray]:
    import io

    with session_scope(settings.database_url) as session:
        model = session.get(Model, job_row(settings, job_id).model_id)
        with np.load(io.BytesIO(model.weights), allow_pickle=False) as archive:
            return {k: archive[k] for k in archive.files if k[0].isdigit()}


def die_before_epoch(monkeypatch, epoch: int) -> None:
    real = job_store.record_epoch

    def record(settings, job, record, checkpoint=None, **values):  # noqa: ANN001, ANN003, ANN202
        if record["epoch"] == epoch:
            raise WorkerDied
        return real(settings, job, record, checkpoint, **values)

    monkeypatch.setattr(job_store, "record_epoch", record)


def test_a_takeover_resumes_after_the_checkpoint_and_matches_an_uninterrupted_run(settings, monkeypatch):
    spec = classifier_spec(epochs=6, layers=[{"type": "dense", "units": 8, "activation": "relu"},
                                             {"type": "dropout", "rate": 0.2}, {"type": "dense", "activation": "softmax"}])
    uninterrupted, interrupted = add_job(settings, spec), add_job(settings, spec)
    run_job(uninterrupted, settings=settings, worker_id="w0")

    with monkeypatch.context() as patch:
        die_before_epoch(patch, 4)
        with pytest.raises(WorkerDied):
            run_job(interrupted, settings=settings, worker_id="w1")
    assert job_row(settings, interrupted).status == "running"
    assert job_store.load_checkpoint_epoch(settings, interrupted) == 3
    silent_since = utcnow() - timedelta(seconds=settings.job_heartbeat_timeout_s + 1)
    with session_scope(settings.database_url) as session:
        session.execute(update(Job).where(Job.id == interrupted).values(heartbeat_at=silent_since))

    run_job(interrupted, settings=settings, worker_id="w2")
    job = job_row(settings, interrupted)
    assert (job.status, job.attempt, job.epoch, job.progress) == ("succeeded", 2, 6, 1.0)
    resumed, reference = epochs_of(settings, interrupted), epochs_of(settings, uninterrupted)
    assert [(e, a) for e, a, _ in resumed] == [(1, 1), (2, 1), (3, 1), (4, 2), (5, 2), (6, 2)]
    np.testing.assert_allclose([loss for *_, loss in resumed], [loss for *_, loss in reference], rtol=1e-6)
    for name, value in model_weights(settings, uninterrupted).items():
        np.testing.assert_allclose(model_weights(settings, interrupted)[name], value, rtol=1e-5, atol=1e-7)
    assert job_store.load_checkpoint_epoch(settings, interrupted) is None, "a finished job keeps no checkpoint"


def test_each_epoch_row_comes_with_the_checkpoint_after_it(settings, monkeypatch):
    job_id = add_job(settings, classifier_spec(epochs=5))
    with monkeypatch.context() as patch:
        die_before_epoch(patch, 3)
        with pytest.raises(WorkerDied):
            run_job(job_id, settings=settings, worker_id="w1")
    with session_scope(settings.database_url) as session:
        checkpoint = session.get(Checkpoint, job_id)
        assert (checkpoint.epoch, checkpoint.attempt) == (2, 1)
        state = decode_state(checkpoint.state)
    assert int(state["epochs_done"]) == 2 and "param/0.weight" in state
    assert [e for e, _, _ in epochs_of(settings, job_id)] == [1, 2]


def test_a_run_that_lost_the_job_writes_neither_epoch_nor_checkpoint(settings):
    job_id = add_job(settings, classifier_spec(), status="running", attempt=2, heartbeat_at=utcnow())
    stale = job_store.JobSnapshot(id=job_id, tenant_id="t", attempt=1, dataset_id="d", target=None, features=None,
                                  input_shape=None, impute=None, spec=classifier_spec(), task=None, queue="cpu",
                                  time_limit_s=None)
    assert job_store.record_epoch(settings, stale, {"epoch": 1, "loss": 1.0}, b"state") == (False, False)
    assert epochs_of(settings, job_id) == [] and job_store.load_checkpoint_epoch(settings, job_id) is None


def test_the_time_limit_fails_the_job_naming_the_limit_and_keeps_a_partial_model(settings):
    job_id = add_job(settings, classifier_spec(epochs=10_000), time_limit_s=0.5)
    run_job(job_id, settings=settings, worker_id="w1")
    job = job_row(settings, job_id)
    assert job.status == "failed" and job.stop_reason == "time_limit"
    assert job.error.startswith(f"time limit of 0.5 s reached after epoch {job.epoch}:")
    assert job.error.endswith("the trained weights are kept as a partial model")
    assert 1 <= job.epoch < 10_000 and len(epochs_of(settings, job_id)) == job.epoch
    with session_scope(settings.database_url) as session:
        model = session.get(Model, job.model_id)
        assert (model.partial, model.partial_reason, model.metrics["epoch"]) == (True, "time_limit", job.epoch)
    assert job.best_metrics == model.metrics


def test_the_time_limit_comes_from_the_spec_or_the_job_capped_by_the_server(settings):
    from dataclasses import replace

    snapshot = job_store.JobSnapshot(id="j", tenant_id="t", attempt=1, dataset_id="d", target=None, features=None,
                                     input_shape=None, impute=None, spec={"time_limit_s": 50}, task=None,
                                     queue="cpu", time_limit_s=70.0)
    capped = replace(settings, job_time_limit_s=30.0)
    assert time_limit_of(settings, snapshot) == 50
    assert time_limit_of(settings, replace(snapshot, spec={})) == 70
    assert time_limit_of(capped, snapshot) == 30
    assert time_limit_of(capped, replace(snapshot, spec={}, time_limit_s=None)) == 30


def test_a_dropped_connection_is_retried_and_other_errors_are_not(monkeypatch):
    monkeypatch.setattr(job_store, "DB_RETRY_DELAYS_S", (0.0, 0.0))
    calls = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise OperationalError("UPDATE jobs", {}, Exception("terminating connection due to administrator command"))
        return "written"

    assert job_store.with_db_retries(flaky) == "written" and len(calls) == 3
    with pytest.raises(KeyError):
        job_store.with_db_retries(lambda: {}["missing"])


def test_a_stopping_worker_keeps_the_epochs_for_the_next_run(settings):
    job_id = add_job(settings, classifier_spec(), status="running", attempt=1, epoch=4, progress=0.3,
                     heartbeat_at=utcnow())
    assert job_store.requeue_job(settings, job_id, 1)
    job = job_row(settings, job_id)
    assert (job.status, job.epoch, job.progress, job.published_at) == ("queued", 4, 0.3, None)
    assert runner.SHUTDOWN is not None


def test_the_specs_time_limit_is_enforced_and_capped_by_the_server(settings):
    spec = {**classifier_spec(epochs=10_000), "time_limit_s": 0.5}
    job_id = add_job(settings, spec)
    run_job(job_id, settings=settings, worker_id="w1")
    job = job_row(settings, job_id)
    assert job.status == "failed" and job.error.startswith("time limit of 0.5 s reached")
    capped = job_store.JobSnapshot(id="j", tenant_id="t", attempt=1, dataset_id="d", target=None, features=None,
                                   input_shape=None, impute=None, spec={**spec, "time_limit_s": 10**9}, task=None,
                                   queue="cpu", time_limit_s=None)
    assert time_limit_of(settings, capped) == settings.job_time_limit_s


def test_a_crash_right_after_the_epoch_that_stops_early_trains_no_further_epoch(settings, monkeypatch):
    # min_delta this large: only the first epoch improves, so patience 2 stops after epoch 3
    spec = classifier_spec(epochs=10, early_stopping={"monitor": "val_loss", "patience": 2, "min_delta": 1e9})
    job_id = add_job(settings, spec)
    real = job_store.record_epoch

    def record_then_die(settings, job, record, checkpoint=None, **values):  # noqa: ANN001, ANN003, ANN202
        result = real(settings, job, record, checkpoint, **values)
        if record["epoch"] == 3:
            raise WorkerDied
        return result

    with monkeypatch.context() as patch:
        patch.setattr(job_store, "record_epoch", record_then_die)
        with pytest.raises(WorkerDied):
            run_job(job_id, settings=settings, worker_id="w1")
    silent_since = utcnow() - timedelta(seconds=settings.job_heartbeat_timeout_s + 1)
    with session_scope(settings.database_url) as session:
        session.execute(update(Job).where(Job.id == job_id).values(heartbeat_at=silent_since))

    run_job(job_id, settings=settings, worker_id="w2")
    job = job_row(settings, job_id)
    assert (job.status, job.attempt, job.epoch) == ("succeeded", 2, 3), job.error
    assert [(e, a) for e, a, _ in epochs_of(settings, job_id)] == [(1, 1), (2, 1), (3, 1)]
