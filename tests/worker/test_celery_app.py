"""Celery settings for long jobs whose state lives in the database."""
from __future__ import annotations

import os
import socket
import sqlite3
import time
from contextlib import closing
from dataclasses import replace

import pytest
from celery.worker import state as worker_state

import worker.celery_app as celery_module
from bps.db import BUSY_TIMEOUT_S
from worker.celery_app import TRAIN_TASK, EmbeddedBrokerTransport, create_celery, embedded_broker_file


def test_long_job_settings(settings):
    conf = create_celery(settings).conf
    assert conf.task_acks_late and conf.task_reject_on_worker_lost and conf.task_ignore_result
    assert conf.worker_prefetch_multiplier == 1 and conf.broker_connection_retry_on_startup
    assert not conf.result_backend
    assert {queue.name for queue in conf.task_queues} == {"cpu", "gpu"}


def test_redis_redelivery_waits_longer_than_the_longest_job(settings):
    redis_settings = replace(settings, broker_url="redis://127.0.0.1:6379/0")
    options = create_celery(redis_settings).conf.broker_transport_options
    assert options["visibility_timeout"] > settings.job_time_limit_s
    unreachable = replace(settings, broker_url="redis://127.0.0.1:1/0")  # a transport is built without connecting
    with create_celery(unreachable).connection_for_read() as connection:
        assert connection.transport.brpop_timeout == celery_module.REDIS_BRPOP_TIMEOUT_S < 1, "a shutdown waits for it"
    embedded = create_celery(settings).conf.broker_transport_options
    assert set(embedded) == {"creator"}, "sqla passes its options to create_engine: no visibility_timeout there"
    postgres = replace(settings, broker_url="sqla+postgresql+psycopg://u@127.0.0.1/b")
    assert create_celery(postgres).conf.broker_transport_options == {}


def test_the_embedded_broker_publishes_in_wal_mode_without_an_fsync_per_message(settings):
    app = create_celery(settings)
    app.send_task(TRAIN_TASK, args=["job-1"], queue="cpu", routing_key="cpu")
    broker_file = embedded_broker_file(settings.broker_url)
    with closing(sqlite3.connect(broker_file)) as reader:
        assert reader.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert reader.execute("SELECT count(*) FROM kombu_message").fetchone()[0] == 1
    with closing(celery_module.embedded_broker_connector(broker_file)()) as connection:
        assert connection.execute("PRAGMA synchronous").fetchone()[0] == 1, "NORMAL"
        assert connection.execute("PRAGMA busy_timeout").fetchone()[0] == BUSY_TIMEOUT_S * 1000 > 5000


def test_the_embedded_brokers_file_is_found_only_in_an_sqla_sqlite_url(tmp_path):
    assert embedded_broker_file(f"sqla+sqlite:///{tmp_path}/b.db") == f"{tmp_path}/b.db"
    assert embedded_broker_file("sqla+postgresql+psycopg://u@127.0.0.1/b") is None
    assert embedded_broker_file("redis://127.0.0.1:6379/0") is None


def test_the_training_task_is_registered(settings):
    assert TRAIN_TASK in create_celery(settings).tasks


def test_celery_dash_a_finds_an_app_built_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("BROKER_URL", f"sqla+sqlite:///{tmp_path}/b.db")
    monkeypatch.setattr(celery_module, "_lazy_app", None)
    app = celery_module.app
    assert app.conf.broker_url == f"sqla+sqlite:///{tmp_path}/b.db" and celery_module.celery is app


def test_the_embedded_broker_is_polled_every_tenth_of_a_second(settings):
    from kombu.transport import sqlalchemy as sqla_transport

    app = create_celery(settings)
    with app.connection_for_read() as connection:
        assert isinstance(connection.transport, EmbeddedBrokerTransport)
        assert connection.transport.polling_interval == celery_module.EMBEDDED_POLLING_INTERVAL_S == 0.1
    assert sqla_transport.Transport.polling_interval == 1.0, "kombu's own transport is left as it is"


@pytest.mark.parametrize("database_url", ["sqlite:///{var_dir}/b.db", "postgresql://u@127.0.0.1/b",
                                          "postgresql+psycopg://u@127.0.0.1/b"])
def test_an_sqla_broker_url_gets_our_transport_on_the_whole_database_url(settings, database_url):
    """kombu takes a URL's transport from the text before its first "+" (no server is reached:
    a transport connects on its first channel)."""
    database_url = database_url.format(var_dir=settings.var_dir)
    app = create_celery(replace(settings, broker_url=f"sqla+{database_url}"))
    for connection in (app.connection_for_read(), app.connection_for_write()):
        with connection:
            assert isinstance(connection.transport, EmbeddedBrokerTransport)
            assert connection.hostname == database_url


def test_a_wait_on_the_embedded_broker_ends_once_the_worker_is_told_to_stop(settings, monkeypatch):
    app = create_celery(settings)
    with app.connection_for_read() as connection, connection.Consumer(app.amqp.queues["cpu"]):
        started = time.monotonic()
        with pytest.raises(socket.timeout):
            connection.drain_events(timeout=0.3)
        assert time.monotonic() - started >= 0.3, "not told to stop: it waits its whole timeout"
        monkeypatch.setattr(worker_state, "should_stop", 0)  # what a warm shutdown sets (EX_OK)
        started = time.monotonic()
        with pytest.raises(socket.timeout):
            connection.drain_events(timeout=2.0)
        assert time.monotonic() - started < 0.2


def test_a_wait_on_the_embedded_broker_ends_at_its_timeout_not_at_the_next_poll(settings):
    app = create_celery(settings)
    with app.connection_for_read() as connection, connection.Consumer(app.amqp.queues["cpu"]):
        connection.transport.polling_interval = 1.0
        started = time.monotonic()
        with pytest.raises(socket.timeout):
            connection.drain_events(timeout=0.2)
        assert 0.2 <= time.monotonic() - started < 0.9  # the old code slept its whole 1 s interval


def test_a_forked_child_does_not_inherit_the_embedded_brokers_engine(settings):
    from kombu.transport.sqlalchemy import Channel

    app = create_celery(settings)
    with app.connection_for_read() as connection:
        connection.default_channel.queue_declare(queue="cpu")
    inherited = dict(Channel._engines)
    assert inherited, "the parent has its engine"
    child = os.fork()
    if child == 0:  # the child reports through its exit status only
        os._exit(0 if not Channel._engines else 1)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the child still held the parent's engine"
    assert Channel._engines == inherited
    with app.connection_for_read() as connection:
        assert connection.default_channel.queue_declare(queue="cpu", passive=True).message_count == 0
