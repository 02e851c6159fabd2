"""bps/db.py: SQLite connections share one file safely (WAL) without an fsync per commit, and a
new file gets large pages."""
from __future__ import annotations

import contextlib
import sqlite3

from sqlalchemy import text

from bps import db
from bps.db import SQLITE_PAGE_SIZE, make_engine
from bps.models import Base


def test_sqlite_runs_in_wal_mode_with_normal_synchronous(tmp_path) -> None:  # noqa: ANN001
    engine = make_engine(f"sqlite:///{tmp_path}/sub/bps.db")
    with engine.connect() as connection:
        assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert connection.execute(text("PRAGMA synchronous")).scalar() == 1  # NORMAL: safe with WAL
        assert connection.execute(text("PRAGMA foreign_keys")).scalar() == 1
        assert connection.execute(text("PRAGMA busy_timeout")).scalar() == db.BUSY_TIMEOUT_S * 1000 > 5000
    engine.dispose()


def test_a_new_sqlite_file_gets_the_large_page_size(tmp_path) -> None:  # noqa: ANN001
    engine = make_engine(f"sqlite:///{tmp_path}/new.db")
    Base.metadata.create_all(engine)
    engine.dispose()
    with contextlib.closing(sqlite3.connect(tmp_path / "new.db")) as raw:  # read by a plain connection
        assert raw.execute("PRAGMA page_size").fetchone()[0] == SQLITE_PAGE_SIZE != 4096
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_an_existing_sqlite_file_keeps_its_page_size_and_its_rows(tmp_path) -> None:  # noqa: ANN001
    path = tmp_path / "old.db"
    with contextlib.closing(sqlite3.connect(path)) as raw:
        raw.execute("PRAGMA page_size=4096")
        raw.execute("PRAGMA journal_mode=WAL")
        raw.execute("CREATE TABLE t (x INTEGER)")
        raw.execute("INSERT INTO t VALUES (7)")
        raw.commit()
    engine = make_engine(f"sqlite:///{path}")
    with engine.begin() as connection:
        connection.execute(text("INSERT INTO t VALUES (8)"))
        assert connection.execute(text("PRAGMA page_size")).scalar() == 4096
        assert connection.execute(text("SELECT group_concat(x) FROM t")).scalar() == "7,8"
    engine.dispose()


def test_one_engine_per_url_pragmas_and_process(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    """session_factory, engine and engine with pragmas share one cache: the same Engine for the
    same URL and pragmas, another for other pragmas (SQLite only) or after a fork (new pid)."""
    url, postgres = f"sqlite:///{tmp_path}/cache.db", "postgresql+psycopg://nobody@127.0.0.1:1/none"
    try:
        shared, writer = db.engine(url), db.engine(url, ("wal_autocheckpoint=0",))
        assert shared is db.session_factory(url).kw["bind"] is db.engine(url) is not writer
        assert writer is db.engine(url, ("wal_autocheckpoint=0",))
        assert db.engine(postgres, ("wal_autocheckpoint=0",)) is db.engine(postgres)  # no connection made
        monkeypatch.setattr(db, "_process_id", lambda: -1)
        assert db.engine(url) is not shared
    finally:
        monkeypatch.undo()
        db.dispose_all()
