"""The Celery application of the training workers and of the API's publisher.

State lives in the database, not in Celery: results are ignored and a task is a job id.
Nothing happens at import time; `celery -A worker.celery_app` finds `app` lazily (module
`__getattr__`), built from the environment on first access.
"""
from __future__ import annotations

import functools
import os
import socket
import sqlite3
import time
from collections.abc import Callable
from typing import Any

from celery import Celery
from celery.worker import state as worker_state
from kombu import Exchange, Queue
from kombu.transport import TRANSPORT_ALIASES
from kombu.transport import sqlalchemy as sqla_transport

from bps.config import Settings, load_settings
from bps.db import BUSY_TIMEOUT_S, configure_sqlite
from bps.sqlite_blobs import database_file

TRAIN_TASK = "bps.train_job"
PREDICT_TASK = "bps.run_prediction"
QUEUES = ("cpu", "gpu")
# The embedded broker (kombu's SQLAlchemy transport) polls its table; kombu's default of 1 s
# added up to 1 s to every job's start. One indexed SQLite read per 0.1 s costs nothing
# measurable. (Its transport options go to create_engine, so this is a class attribute.)
EMBEDDED_POLLING_INTERVAL_S = 0.1
# How long an idle worker on Redis waits in one BRPOP (kombu's default 1 s): it notices a
# shutdown only between two, so SIGTERM or Ctrl-C waited up to 1 s more. The cost: an idle
# worker's consumer polls Redis every 0.25 s (an empty BRPOP sent again), 4 commands a second.
REDIS_BRPOP_TIMEOUT_S = 0.25
# The name under which kombu finds EmbeddedBrokerTransport (bpssqla+<database URL>).
EMBEDDED_TRANSPORT_ALIAS = "bpssqla"


class EmbeddedBrokerChannel(sqla_transport.Channel):
    """kombu's SQLAlchemy channel, which opens a Session on first use and never closes it: the
    Session's pooled connection stayed checked out until the garbage collector broke the
    channel's reference cycle. A closed channel gives it back to the engine's pool at once."""

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None
        super().close()


class EmbeddedBrokerTransport(sqla_transport.Transport):
    """kombu's SQLAlchemy transport, polled every EMBEDDED_POLLING_INTERVAL_S, whose wait for a
    message ends at the first poll after the worker is told to stop. Celery's loop for a
    transport without an event loop (synloop) waits 2 s in each drain_events and drains once
    more after the shutdown flag is seen (tests/worker/test_main.py's SIGTERM test: 4.19-4.68 s
    to exit on the code before, against its 2.5 s bound; 2026-11-30 20:40-20:41 UTC)."""

    Channel = EmbeddedBrokerChannel
    polling_interval = EMBEDDED_POLLING_INTERVAL_S

    def drain_events(self, connection: Any, timeout: float | None = None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not _worker_told_to_stop():
            try:  # one poll (a job it delivers runs inside it, to its end or to its own stop)
                return super().drain_events(connection, timeout=0)
            except socket.timeout:
                time_left = self.polling_interval if deadline is None else deadline - time.monotonic()
                if time_left <= 0:
                    raise
                time.sleep(min(self.polling_interval, time_left))  # no poll past the deadline
        raise socket.timeout


def _worker_told_to_stop() -> bool:
    """Whether this process is a Celery worker that got a warm or cold shutdown (SIGTERM,
    SIGINT, SIGQUIT): the flags that celery.worker.state.maybe_shutdown raises on."""
    return any(flag is not None and flag is not False
               for flag in (worker_state.should_stop, worker_state.should_terminate))


def _embedded_transport_alias() -> str:
    """Registers EmbeddedBrokerTransport under EMBEDDED_TRANSPORT_ALIAS in kombu's table of
    transports (on the first app built, not at import) and returns the alias."""
    TRANSPORT_ALIASES.setdefault(EMBEDDED_TRANSPORT_ALIAS, f"{__name__}:{EmbeddedBrokerTransport.__name__}")
    return EMBEDDED_TRANSPORT_ALIAS


def _is_redis(broker_url: str) -> bool:
    return broker_url.startswith(("redis://", "rediss://", "redis+socket://"))


def broker_transport_options(settings: Settings) -> dict[str, Any]:
    """Redis redelivers an unacknowledged message after `visibility_timeout`: it must outlast
    the longest job (acks_late acknowledges at the end), or a long job would run twice. The
    SQLAlchemy transport passes its options to create_engine: an SQLite file gets a `creator`
    (embedded_broker_connector), other databases nothing."""
    if _is_redis(settings.broker_url):  # (kombu's Redis transport takes its BRPOP timeout from polling_interval)
        return {"visibility_timeout": int(settings.job_time_limit_s) + 3600, "polling_interval": REDIS_BRPOP_TIMEOUT_S}
    path = embedded_broker_file(settings.broker_url)
    return {"creator": embedded_broker_connector(path)} if path else {}


def embedded_broker_file(broker_url: str) -> str | None:
    """The SQLite file of an embedded broker's URL (sqla+sqlite:///...); None for another broker."""
    return database_file(broker_url.removeprefix("sqla+")) if broker_url.startswith("sqla+") else None


def embedded_broker_connector(path: str) -> Callable[[], sqlite3.Connection]:
    """Connections to the embedded broker's file set as bps.db's (the busy timeout, then
    configure_sqlite: WAL mode, synchronous=NORMAL, foreign keys, 64 KiB pages in a new file),
    where kombu's own have a rollback journal (an fsync per published message) and
    the workers' polls lock the publishers out. A power loss may drop the last messages, never
    corrupt the file; a job whose message is lost is republished by the reaper (published_at)."""

    def connect() -> sqlite3.Connection:
        connection = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, check_same_thread=False)
        configure_sqlite(connection)
        return connection

    return connect


def _forget_inherited_broker_engines() -> None:
    """In a forked child (a prefork pool process): kombu's SQLAlchemy engines, one per URL in a
    dict on the class (not keyed by process), hold the parent's idle SQLite connections, which
    must not be used or closed from two processes. dispose(close=False) drops them without closing the
    parent's; the child's first broker connection makes its own engine."""
    for engine, _session_factory in list(sqla_transport.Channel._engines.values()):
        engine.dispose(close=False)
    sqla_transport.Channel._engines.clear()


@functools.cache
def _register_fork_hook() -> None:
    os.register_at_fork(after_in_child=_forget_inherited_broker_engines)


def create_celery(settings: Settings) -> Celery:
    """A configured Celery app with the training task registered."""
    _register_fork_hook()
    app = Celery("bps", broker=settings.broker_url, set_as_current=False)
    if settings.broker_url.startswith("sqla+"):
        # The Celery CLI sets broker_url from $BROKER_URL (sqla+: kombu's own transport), so the
        # connections' read/write URLs name ours. kombu takes the transport from a URL's text
        # before its first "+" (an alias; never an import path) and overrides broker_transport.
        url = f"{_embedded_transport_alias()}+{settings.broker_url.removeprefix('sqla+')}"
        app.conf.update(broker_read_url=url, broker_write_url=url)
    app.conf.update(
        broker_connection_retry_on_startup=True,
        broker_transport_options=broker_transport_options(settings),
        result_backend=None,
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_serializer="json",
        accept_content=["json"],
        task_default_queue="cpu",
        task_queues=[Queue(name, Exchange(name, type="direct"), routing_key=name) for name in QUEUES],
        task_publish_retry=True,
        task_publish_retry_policy={"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5},
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
    )
    from worker.tasks import register_tasks  # noqa: PLC0415  (tasks import celery_app's names)

    register_tasks(app, settings)
    return app


_lazy_app: Celery | None = None


def __getattr__(name: str) -> Celery:
    """`celery -A worker.celery_app worker` support: `app` built from the environment."""
    global _lazy_app
    if name not in ("app", "celery"):
        raise AttributeError(name)
    if _lazy_app is None:
        _lazy_app = create_celery(load_settings())
    return _lazy_app
