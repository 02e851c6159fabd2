"""bps/db.py: SQLite connections share one file safely (WAL) without an fsync per commit."""
from __future__ import annotations

from sqlalchemy import text

from bps.db import make_engine


def test_sqlite_runs_in_wal_mode_with_normal_synchronous(tmp_path) -> None:  # noqa: ANN001
    engine = make_engine(f"sqlite:///{tmp_path}/sub/bps.db")
    with engine.connect() as connection:
        assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert connection.execute(text("PRAGMA synchronous")).scalar() == 1  # NORMAL: safe with WAL
        assert connection.execute(text("PRAGMA foreign_keys")).scalar() == 1
    engine.dispose()
