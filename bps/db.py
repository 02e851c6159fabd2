"""Database engine and sessions, shared by the API and the workers (no Flask app context)."""
from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

_lock = threading.Lock()
# One sessionmaker (and its Engine) per URL, extra SQLite pragmas and process.
_factories: dict[tuple[str, tuple[str, ...], int], sessionmaker[Session]] = {}
_process_id = os.getpid  # the cache key's process (a test patches this, not os.getpid for everyone)
# A new SQLite file's page size. A dataset chunk is a chain of overflow pages that SQLite reads
# with one pread each: 64 KiB pages read a 3 GB dataset with 16x fewer system calls than 4 KiB
# (the reader's CPU per GB about halved). Fixed once the file exists (WAL): older files keep theirs.
SQLITE_PAGE_SIZE = 65536
# How long an SQLite connection waits for another one's lock: given as connect()'s timeout (also
# to the embedded broker's connections, and in ms to sqlite_blobs'), so it holds from the open
# on, before configure_sqlite's pragmas (journal_mode=WAL may wait for a lock).
BUSY_TIMEOUT_S = 30


def _ensure_sqlite_dir(url: str) -> None:
    prefix = "sqlite:///"
    if url.startswith(prefix) and ":memory:" not in url:
        directory = os.path.dirname(url[len(prefix):])
        if directory:
            os.makedirs(directory, exist_ok=True)


def make_engine(url: str, sqlite_pragmas: tuple[str, ...] = ()) -> Engine:
    """An Engine for `url`. SQLite gets WAL and a busy timeout so the API and a worker
    process can share one file, and `synchronous=NORMAL`: in WAL mode that is still
    crash-safe for the database (a power loss may drop the last commits, never corrupt the
    file), and a commit no longer waits for an fsync (milliseconds per request). The page size
    must come first: it only applies while the file is still empty (journal_mode=WAL writes it).
    `sqlite_pragmas` ("name=value") run after these on every new SQLite connection."""
    _ensure_sqlite_dir(url)
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_S, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # noqa: ANN001
            configure_sqlite(dbapi_conn, sqlite_pragmas)

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10)


def configure_sqlite(dbapi_conn: Any, extra: tuple[str, ...] = ()) -> None:
    """The settings of every SQLite connection of the service (make_engine's, the embedded
    broker's), then `extra` ("name=value") pragmas; the connection comes opened with
    timeout=BUSY_TIMEOUT_S."""
    cursor = dbapi_conn.cursor()
    for pragma in (f"page_size={SQLITE_PAGE_SIZE}", "journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON",
                   *extra):
        cursor.execute(f"PRAGMA {pragma}")
    cursor.close()


def session_factory(url: str, sqlite_pragmas: tuple[str, ...] = ()) -> sessionmaker[Session]:
    """One sessionmaker per URL, extra SQLite pragmas (engine()) and process (engines must not
    cross a fork)."""
    if not url.startswith("sqlite"):
        sqlite_pragmas = ()  # other databases ignore them: one engine per URL
    key = (url, sqlite_pragmas, _process_id())
    with _lock:
        factory = _factories.get(key)
        if factory is None:
            factory = _factories[key] = sessionmaker(make_engine(url, sqlite_pragmas), expire_on_commit=False)
        return factory


@contextlib.contextmanager
def session_scope(url: str) -> Iterator[Session]:
    """A short transaction: commit on success, roll back on error."""
    session = session_factory(url)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def engine(url: str, sqlite_pragmas: tuple[str, ...] = ()) -> Engine:
    """The Engine behind session_factory(url). With `sqlite_pragmas` on SQLite: an Engine of its
    own, one per URL, pragmas and process, whose every new connection (a reconnect too) runs
    them, so that the shared pool's connections never get them; other databases ignore them."""
    return session_factory(url, sqlite_pragmas).kw["bind"]


def connection_scope(url: str) -> contextlib.AbstractContextManager[Connection]:
    """A short Core transaction (no ORM session): for hot, prebuilt statements."""
    return engine(url).begin()


def dispose_all() -> None:
    """Drop every pooled connection of this process (tests, after a fork)."""
    with _lock:
        for factory in _factories.values():
            factory.kw["bind"].dispose()
        _factories.clear()


def is_database_unavailable(exc: BaseException) -> bool:
    """A lost or refused database connection (or an unopenable or locked SQLite file): worth
    another try later; integrity and programming errors are not."""
    if isinstance(exc, (OperationalError, InterfaceError)):
        return True
    return isinstance(exc, DBAPIError) and bool(exc.connection_invalidated)
