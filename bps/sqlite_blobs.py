"""SQLite blobs read straight into the caller's buffer: sqlite3_blob_read of the C library that
Python's sqlite3 module itself loaded, called through ctypes (which releases the GIL).

sqlite3.Blob.read can only return a new bytes object, which is then copied into the target: one
copy of every byte more than SQLite's own, and an allocation per piece. SQLite's own copy
depends on its build: with SQLITE_DIRECT_OVERFLOW_READ it reads a blob's overflow pages straight
into the target (when they are not in the WAL); without it, as in Debian 12's 3.40.1, each page
is read into its page cache and copied from there (strace of a read of the bench's .npz: the
64 KiB preads land in a few recurring buffers, not in the batch; perf: a fifth of the read's
CPU in that memcpy, 2026-11-30 14:00-14:40 UTC: `strace -f -e trace=pread64 -e raw=pread64` and `perf record -e cpu-clock -g` of a script reading the dataset through bps.prediction_rows.read_ahead). The 3 GB .npz of
`python -m bench predictions`, read by two threads alone: 0.17 s instead of 0.25 s; the
worker's waits for its batches during that prediction: 0.41-0.48 s instead of 0.48-0.58 s.
It must be the SAME library instance: a second SQLite copy in the process (a wheel with its
own, such as apsw's) would release the first one's POSIX locks on the file whenever it closes
it (sqlite.org/howtocorrupt.html, 2.2.1). `direct_library()` therefore takes the libsqlite3 in
this process's memory map, and answers None where the sqlite3 module has SQLite built in
(no shared library) or the versions differ; StoredBytes then reads through sqlite3.Blob.
"""
from __future__ import annotations

import ctypes
import functools
import sqlite3
from typing import Any

from sqlalchemy.engine import make_url

from bps.db import BUSY_TIMEOUT_S

SQLITE_OK, SQLITE_OPEN_READWRITE = 0, 0x2
BUSY_TIMEOUT_MS = BUSY_TIMEOUT_S * 1000  # as bps.db's connections


@functools.cache
def direct_library() -> ctypes.CDLL | None:
    """The libsqlite3 that the sqlite3 module uses, with the few functions typed; None without one."""
    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps if "libsqlite3" in line and "/" in line}
    except OSError:
        return None
    if len(paths) != 1:
        return None
    lib = ctypes.CDLL(paths.pop())
    lib.sqlite3_libversion.restype = ctypes.c_char_p
    if lib.sqlite3_libversion().decode() != sqlite3.sqlite_version:
        return None
    handle, pointer = ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p)
    signatures = {"sqlite3_open_v2": [ctypes.c_char_p, pointer, ctypes.c_int, ctypes.c_char_p],
                  "sqlite3_busy_timeout": [handle, ctypes.c_int], "sqlite3_close_v2": [handle],
                  "sqlite3_blob_open": [handle, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int64,
                                        ctypes.c_int, pointer],
                  "sqlite3_blob_bytes": [handle], "sqlite3_blob_read": [handle, ctypes.c_void_p, ctypes.c_int, ctypes.c_int],
                  "sqlite3_blob_close": [handle],
                  "sqlite3_exec": [handle, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]}
    for name, argtypes in signatures.items():
        function = getattr(lib, name)
        function.argtypes, function.restype = argtypes, ctypes.c_int
    return lib


def database_file(database_url: str) -> str | None:
    """The file of a sqlite:/// URL; None for an in-memory database or another one."""
    url = make_url(database_url)
    return url.database if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:") else None


class DirectBlobs:
    """A connection of its own to `path`, reading column `column` of `table` in the rows
    `rowids`; `gone()` is raised when a row cannot be opened or read (deleted meanwhile).
    `mmap_bytes`: this connection's PRAGMA mmap_size (SQLite caps it at its SQLITE_MAX_MMAP_SIZE,
    2 GiB in Debian's build): pages in the map and not in the WAL are copied from the map into
    the target, not first read into SQLite's page cache. The pages read stay in the process's
    resident set until SQLite drops the map: at close(), and at a read that begins after another
    connection committed (as the worker's stored results do after every batch)."""

    def __init__(self, lib: ctypes.CDLL, path: str, table: str, column: str, rowids: list[int], gone: Any,
                 mmap_bytes: int = 0) -> None:
        self.lib, self.table, self.column, self.rowids, self.gone = lib, table.encode(), column.encode(), rowids, gone
        self.db, self.blob, self.rowid, self.size = ctypes.c_void_p(), ctypes.c_void_p(), None, 0
        if lib.sqlite3_open_v2(path.encode(), ctypes.byref(self.db), SQLITE_OPEN_READWRITE, None) != SQLITE_OK:
            lib.sqlite3_close_v2(self.db)  # a handle comes back even when the open fails
            raise sqlite3.OperationalError(f"unable to open database file {path}")
        lib.sqlite3_busy_timeout(self.db, BUSY_TIMEOUT_MS)
        if mmap_bytes and lib.sqlite3_exec(self.db, f"PRAGMA mmap_size={int(mmap_bytes)}".encode(),
                                           None, None, None) != SQLITE_OK:
            self.close()
            raise sqlite3.OperationalError(f"PRAGMA mmap_size failed on {path}")

    def copy(self, index: int, offset: int, view: memoryview) -> int:
        """Bytes of row rowids[index]'s value from `offset` into `view` (as many as both hold)."""
        rowid = self.rowids[index]
        if rowid != self.rowid:
            self.close_blob()
            if self.lib.sqlite3_blob_open(self.db, b"main", self.table, self.column, rowid, 0,
                                          ctypes.byref(self.blob)) != SQLITE_OK:
                raise self.gone()
            self.rowid, self.size = rowid, self.lib.sqlite3_blob_bytes(self.blob)
        count = max(0, min(len(view), self.size - offset))
        if count:
            target = (ctypes.c_char * count).from_buffer(view)
            if self.lib.sqlite3_blob_read(self.blob, ctypes.addressof(target), count, offset) != SQLITE_OK:
                raise self.gone()
        return count

    def close_blob(self) -> None:
        if self.rowid is not None:
            self.lib.sqlite3_blob_close(self.blob)
            self.rowid = None

    def close(self) -> None:
        self.close_blob()
        self.lib.sqlite3_close_v2(self.db)
