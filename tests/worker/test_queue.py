"""publish_job: a message on the job's queue, then published_at; broker failures raise.
warm_publisher: connected and the queues declared before the first publish."""
from __future__ import annotations

import sqlite3
from contextlib import closing
from dataclasses import replace

import pytest
from kombu import Queue

from tests.worker.test_runner import add_job, classifier_spec, job_row
from worker.celery_app import embedded_broker_file
from worker.queue import celery_for, publish_job, warm_publisher


def test_publish_sends_the_job_id_to_its_queue_and_records_it(settings):
    job_id = add_job(settings, classifier_spec())
    publish_job(settings, job_id, "gpu")
    assert job_row(settings, job_id).published_at is not None
    with celery_for(settings).connection_for_read() as connection:
        queue = connection.SimpleQueue("gpu")
        message = queue.get(timeout=5)
        assert message.headers["task"] == "bps.train_job" and message.decode()[0] == [job_id]
        assert connection.SimpleQueue("cpu").qsize() == 0


def test_an_unknown_queue_is_refused(settings):
    with pytest.raises(ValueError, match="queue must be one of"):
        publish_job(settings, "x", "tpu")


def test_an_unreachable_broker_raises_and_leaves_the_job_unpublished(settings):
    job_id = add_job(settings, classifier_spec())
    with pytest.raises(Exception) as raised:  # noqa: PT011  (kombu's OperationalError)
        publish_job(replace(settings, broker_url="redis://127.0.0.1:1/0"), job_id, "cpu")
    assert "refused" in str(raised.value).lower() or "connect" in str(raised.value).lower()
    assert job_row(settings, job_id).published_at is None


def test_warming_the_publisher_declares_both_queues_and_sends_nothing(settings):
    warm_publisher(settings)
    broker_file = embedded_broker_file(settings.broker_url)
    with closing(sqlite3.connect(broker_file)) as broker:
        assert {name for (name,) in broker.execute("SELECT name FROM kombu_queue")} == {"cpu", "gpu"}
        assert broker.execute("SELECT count(*) FROM kombu_message").fetchone()[0] == 0


def test_after_warming_the_first_publishes_declare_no_queue_again(settings, monkeypatch):
    """warm_publisher declares through the producer's maybe_declare, whose cache of declared
    queues the sends share."""
    declared, declare = [], Queue.declare

    def counted_declare(queue, *args, **kwargs):
        declared.append(queue.name)
        return declare(queue, *args, **kwargs)

    monkeypatch.setattr(Queue, "declare", counted_declare)
    warm_publisher(settings)
    assert sorted(declared) == ["cpu", "gpu"]
    for queue in ("cpu", "gpu"):
        publish_job(settings, add_job(settings, classifier_spec()), queue)
    assert sorted(declared) == ["cpu", "gpu"]


def test_warming_the_publisher_with_the_broker_down_logs_and_returns(settings, caplog):
    warm_publisher(replace(settings, broker_url="redis://127.0.0.1:1/0"))
    assert "could not connect yet" in caplog.text
