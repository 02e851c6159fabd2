"""bps.sqlite_blobs: the C library found is the sqlite3 module's own, and the URLs it serves.
(Reads through it: tests/bps/test_stored_bytes.py, reader "direct".)"""
from __future__ import annotations

import sqlite3

import pytest

from bps.sqlite_blobs import database_file, direct_library


def test_the_library_is_the_one_sqlite3_loaded() -> None:
    lib = direct_library()
    if lib is None:  # only where the sqlite3 module has SQLite built in: then there is none to share
        with open("/proc/self/maps") as maps:
            assert "libsqlite3" not in maps.read()
        pytest.skip("this Python's sqlite3 has no shared libsqlite3")
    assert lib.sqlite3_libversion().decode() == sqlite3.sqlite_version
    assert lib._name in open("/proc/self/maps").read()


@pytest.mark.parametrize(("url", "path"), [
    ("sqlite:////var/bps/bps.db", "/var/bps/bps.db"),
    ("sqlite:///relative/bps.db", "relative/bps.db"),
    ("sqlite://", None),
    ("sqlite:///:memory:", None),
    ("postgresql+psycopg://u@h/db", None),
])
def test_only_a_sqlite_file_has_a_path(url: str, path: str | None) -> None:
    assert database_file(url) == path
