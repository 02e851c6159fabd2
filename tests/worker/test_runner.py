"""The runner against a real SQLite database, a real small dataset and the real engine."""
from __future__ import annotations

import io
import threading
import time
from datetime import timedelta

import numpy as np
from sqlalchemy import func, select, update

from bps.datasets import create_dataset
from bps.db import session_scope
from bps.models import Dataset, Epoch, Job, Model, utcnow
from bps.tenants import get_or_create_tenant
from worker.runner import run_job


LABELS = ("cat", "dog", "eel")


def blobs_csv(n_per_class: int = 40, seed: int = 0) -> bytes:
    """Three well separated 2-D blobs with string labels."""
    rng = np.random.default_rng(seed)
    lines = ["x1,x2,label"]
    for k, label in enumerate(LABELS):
        centre = np.array([4.0 * k, -3.0 * k])
        for point in centre + rng.normal(scale=0.5, size=(n_per_class, 2)):
            lines.append(f"{point[0]:.4f},{point[1]:.4f},{label}")
    return ("\n".join(lines) + "\n").encode()


def classifier_spec(**overrides) -> dict:
    spec = {
        "layers": [{"type": "dense", "units": 8, "activation": "relu"}, {"type": "dense", "activation": "softmax"}],
        "loss": "cross_entropy", "optimizer": {"type": "adam", "learning_rate": 0.05},
        "epochs": 15, "batch_size": 16, "validation_split": 0.2, "seed": 0, "device": "cpu",
        "early_stopping": None,
    }
    spec.update(overrides)
    return spec


def add_job(settings, spec: dict, *, raw: bytes | None = None, **job_values) -> str:
    with session_scope(settings.database_url) as session:
        tenant = get_or_create_tenant(session=session, tenant_name="acme")
        dataset = create_dataset(
            session=session, tenant_id=tenant.id, raw=raw or blobs_csv(), filename="blobs.csv", name=None,
            chunk_bytes=1024, max_rows=10_000, max_array_bytes=1 << 30,
        )
        job = Job(tenant_id=tenant.id, dataset_id=dataset.id, target="label", spec=spec,
                  task="classification", queue="cpu", **job_values)
        session.add(job)
        session.flush()
        return job.id


def job_row(settings, job_id: str) -> Job:
    with session_scope(settings.database_url) as session:
        return session.get(Job, job_id)


def epoch_numbers(settings, job_id: str) -> list[int]:
    with session_scope(settings.database_url) as session:
        return list(session.scalars(select(Epoch.epoch).where(Epoch.job_id == job_id).order_by(Epoch.epoch)))


def count(settings, model) -> int:  # noqa: ANN001
    with session_scope(settings.database_url) as session:
        return session.scalar(select(func.count()).select_from(model))


def test_job_succeeds_with_one_epoch_row_per_epoch_and_a_model(settings):
    job_id = add_job(settings, classifier_spec())
    run_job(job_id, settings=settings, worker_id="w1")

    job = job_row(settings, job_id)
    assert (job.status, job.error, job.attempt, job.worker_id, job.device) == ("succeeded", None, 1, "w1", "cpu")
    assert job.progress == 1.0 and job.epoch == 15 and job.finished_at >= job.started_at
    assert epoch_numbers(settings, job_id) == list(range(1, 16))
    with session_scope(settings.database_url) as session:
        model = session.get(Model, job.model_id)
        last = session.scalars(select(Epoch).where(Epoch.job_id == job_id, Epoch.epoch == 15)).one()
        assert model.classes == list(LABELS) and model.task == "classification"
        assert model.features == ["x1", "x2"] and model.target == "label"
        assert model.preprocessing["classes"] == list(LABELS)
        weights = np.load(io.BytesIO(model.weights), allow_pickle=False)
        assert weights["0.weight"].shape == (8, 2) and weights["1.weight"].shape == (3, 8)
        assert last.val_accuracy is not None and last.val_accuracy >= 0.9
        assert set(last.grad_norms) >= {"0.weight", "0.bias", "1.weight", "1.bias"}
        assert job.metrics["val_accuracy"] == last.val_accuracy


def test_running_the_same_job_again_does_nothing(settings):
    job_id = add_job(settings, classifier_spec(epochs=3))
    run_job(job_id, settings=settings, worker_id="w1")
    first = job_row(settings, job_id)
    run_job(job_id, settings=settings, worker_id="w2")

    again = job_row(settings, job_id)
    assert (again.status, again.attempt, again.worker_id, again.model_id) == ("succeeded", 1, "w1", first.model_id)
    assert epoch_numbers(settings, job_id) == [1, 2, 3]
    assert count(settings, Model) == 1


def test_a_job_running_elsewhere_with_a_fresh_heartbeat_is_left_alone(settings):
    job_id = add_job(settings, classifier_spec(), status="running", attempt=1, worker_id="w1",
                     heartbeat_at=utcnow())
    run_job(job_id, settings=settings, worker_id="w2")
    job = job_row(settings, job_id)
    assert (job.status, job.attempt, job.worker_id) == ("running", 1, "w1")


def test_a_running_job_whose_worker_went_silent_is_taken_over(settings):
    silent_since = utcnow() - timedelta(seconds=settings.job_heartbeat_timeout_s + 5)
    job_id = add_job(settings, classifier_spec(epochs=3), status="running", attempt=1, worker_id="dead",
                     heartbeat_at=silent_since)
    with session_scope(settings.database_url) as session:
        session.add(Epoch(job_id=job_id, epoch=1, attempt=1, loss=9.0))
    run_job(job_id, settings=settings, worker_id="w2")
    job = job_row(settings, job_id)
    assert (job.status, job.attempt, job.worker_id) == ("succeeded", 2, "w2")
    with session_scope(settings.database_url) as session:
        assert set(session.scalars(select(Epoch.attempt).where(Epoch.job_id == job_id))) == {2}


def test_a_queued_job_with_cancel_requested_never_starts(settings):
    job_id = add_job(settings, classifier_spec(), cancel_requested=True)
    run_job(job_id, settings=settings, worker_id="w1")
    job = job_row(settings, job_id)
    assert (job.status, job.started_at, job.attempt) == ("cancelled", None, 0)
    assert epoch_numbers(settings, job_id) == []


def test_an_unknown_job_id_does_nothing(settings):
    run_job("no-such-job", settings=settings, worker_id="w1")
    assert count(settings, Job) == 0


def test_a_deleted_dataset_fails_the_job_with_a_sentence(settings):
    job_id = add_job(settings, classifier_spec())
    with session_scope(settings.database_url) as session:
        session.delete(session.get(Dataset, job_row(settings, job_id).dataset_id))
    run_job(job_id, settings=settings, worker_id="w1")
    job = job_row(settings, job_id)
    assert job.status == "failed" and job.finished_at is not None
    assert "was deleted before training started" in job.error


def test_a_preprocessing_problem_fails_the_job_naming_the_column(settings):
    job_id = add_job(settings, classifier_spec())
    with session_scope(settings.database_url) as session:
        session.execute(update(Job).where(Job.id == job_id).values(target="no_such_column"))
    run_job(job_id, settings=settings, worker_id="w1")
    job = job_row(settings, job_id)
    assert job.status == "failed" and "no_such_column" in job.error


def test_cancel_mid_run_stops_and_keeps_the_epochs(settings):
    job_id = add_job(settings, classifier_spec(epochs=3000))
    runner = threading.Thread(target=run_job, args=(job_id,), kwargs={"settings": settings, "worker_id": "w1"})
    runner.start()
    deadline = time.monotonic() + 20
    while len(epoch_numbers(settings, job_id)) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    with session_scope(settings.database_url) as session:
        session.execute(update(Job).where(Job.id == job_id).values(cancel_requested=True))
    runner.join(timeout=20)

    assert not runner.is_alive()
    job = job_row(settings, job_id)
    kept = epoch_numbers(settings, job_id)
    assert job.status == "cancelled" and job.stop_reason == "cancelled" and job.finished_at is not None
    assert 2 <= len(kept) < 3000 and kept == list(range(1, len(kept) + 1))
    with session_scope(settings.database_url) as session:  # the epochs trained are kept as a partial model
        model = session.get(Model, job.model_id)
        assert (model.partial, model.partial_reason, model.metrics["epoch"]) == (True, "cancelled", len(kept))


def test_a_diverging_job_fails_naming_the_epoch(settings):
    spec = classifier_spec(optimizer={"type": "sgd", "learning_rate": 1e12}, epochs=20)
    job_id = add_job(settings, spec)
    run_job(job_id, settings=settings, worker_id="w1")
    job = job_row(settings, job_id)
    assert job.status == "failed" and job.model_id is None
    assert job.error.startswith("loss became NaN at epoch ")
    assert job.error.endswith(": lower the learning rate or set gradient_clip_norm")
    diverged_epoch = int(job.error.split("epoch ")[1].split(":")[0])
    assert 1 <= diverged_epoch <= 20


def test_an_engine_error_fails_the_job_and_never_leaves_it_running(settings):
    spec = classifier_spec(layers=[{"type": "conv2d", "filters": 2, "kernel_size": 3}, {"type": "dense"}])
    job_id = add_job(settings, spec)
    run_job(job_id, settings=settings, worker_id="w1")
    job = job_row(settings, job_id)
    assert job.status == "failed" and job.error and job.finished_at is not None


def test_a_model_restored_to_its_best_epoch_reports_that_epochs_metrics(settings):
    # validation "last" of label-sorted blobs: one class the training rows lack, so val_loss worsens early
    spec = classifier_spec(epochs=60, optimizer={"type": "adam", "learning_rate": 0.5}, validation="last",
                           early_stopping={"monitor": "val_loss", "patience": 2, "restore_best": True})
    job_id = add_job(settings, spec)
    run_job(job_id, settings=settings, worker_id="w1")
    job = job_row(settings, job_id)
    assert job.status == "succeeded", job.error
    with session_scope(settings.database_url) as session:
        model = session.get(Model, job.model_id)
        rows = {e.epoch: e for e in session.scalars(select(Epoch).where(Epoch.job_id == job_id))}
    best = min(rows, key=lambda k: rows[k].val_loss)
    assert model.metrics["epoch"] == best and model.metrics["val_loss"] == rows[best].val_loss
    assert best < job.epoch  # stopped later than its best epoch, so the job's latest metrics differ


def test_a_split_with_no_training_row_fails_the_job_naming_it_without_a_traceback(settings, caplog):
    job_id = add_job(settings, classifier_spec(validation_split=0.999))  # 120 rows: none trains
    with caplog.at_level("WARNING", logger="worker.runner"):
        run_job(job_id, settings=settings, worker_id="w1")
    job = job_row(settings, job_id)
    assert job.status == "failed" and "validation_split 0.999 of 120 rows" in job.error
    assert not [r for r in caplog.records if r.exc_info], "a data problem is logged without a traceback"


def test_a_regression_target_beyond_float32_fails_the_job_naming_row_and_column(settings):
    raw = b"x,y\n" + b"".join(b"%d,%d\n" % (i, 2 * i) for i in range(20)) + b"1,3e39\n"
    spec = classifier_spec(loss="mse", validation_split=0.0,
                           layers=[{"type": "dense", "units": 4, "activation": "relu"}, {"type": "dense", "units": 1}])
    job_id = add_job(settings, spec, raw=raw)
    with session_scope(settings.database_url) as session:
        session.execute(update(Job).where(Job.id == job_id).values(target="y", task="regression"))
    run_job(job_id, settings=settings, worker_id="w1")
    job = job_row(settings, job_id)
    assert job.status == "failed" and "row 20, target 'y'" in job.error and "float32" in job.error


def test_a_database_lost_while_recording_the_model_is_retried_and_the_job_succeeds(settings, monkeypatch):
    from sqlalchemy.exc import OperationalError

    from worker import job_store, outcome

    def failing_once(real):  # noqa: ANN001, ANN202
        calls = []

        def wrapper(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            calls.append(1)
            if len(calls) == 1:
                raise OperationalError("INSERT INTO models", {}, Exception("terminating connection"))
            return real(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(job_store, "DB_RETRY_DELAYS_S", (0.01,))
    monkeypatch.setattr(job_store, "finish_with_model", failing_once(job_store.finish_with_model))
    monkeypatch.setattr(outcome, "model_values", failing_once(outcome.model_values))
    job_id = add_job(settings, classifier_spec(epochs=2))
    run_job(job_id, settings=settings, worker_id="w1")
    job = job_row(settings, job_id)
    assert (job.status, job.error) == ("succeeded", None) and job.model_id is not None
    assert count(settings, Model) == 1
