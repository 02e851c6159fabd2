"""bps.stored_bytes: a stored dataset's chunks read back as one seekable stream, through every
reader (queries by window, sqlite3.Blob, bps.sqlite_blobs), each connection held from the
first read to close, a dataset deleted meanwhile said so."""
from __future__ import annotations

import contextlib
import io
import os

import numpy as np
import pandas as pd
import pytest

from bps.dataset_batches import dataset_batches
from bps.db import SQLITE_PAGE_SIZE, session_scope
from bps.stored_bytes import DatasetGone, StoredBytes
from tests.bps.test_dataset_batches import ROWS, frame, stored


def seek_and_read(stream: StoredBytes, raw: bytes) -> None:
    assert stream.read() == raw
    stream.seek(-150, io.SEEK_END)
    assert stream.read(120) == raw[-150:-30]
    stream.seek(95)
    assert stream.read(10) == raw[95:105] and stream.tell() == 105


@pytest.mark.parametrize("window_bytes", [1, 97, 3 * 97 + 5, 10**6])
def test_stored_bytes_seek_and_read_across_chunks(settings, monkeypatch, window_bytes: int) -> None:  # noqa: ANN001
    """Every read window of the query reader (one chunk, several, the whole dataset), read
    forwards and backwards."""
    monkeypatch.setattr("bps.stored_bytes.WINDOW_BYTES", window_bytes)
    raw = frame().to_csv(index=False).encode()
    with StoredBytes(settings.database_url, stored(settings, raw, "d.csv"), blobs=False) as stream:
        seek_and_read(stream, raw)


def use_reader(monkeypatch, reader: str) -> bool:  # noqa: ANN001
    """StoredBytes' `blobs` for `reader`: "direct" (bps.sqlite_blobs), "blob" (sqlite3.Blob, as
    where the C library cannot be had) or "windows" (queries)."""
    if reader == "blob":
        monkeypatch.setattr("bps.sqlite_blobs.direct_library", lambda: None)
    return reader != "windows"


@pytest.mark.parametrize("reader", ["direct", "blob"])
@pytest.mark.parametrize("piece_bytes", [1, 7, 1 << 20])
def test_sqlite_blob_reads_across_chunks(settings, monkeypatch, reader: str, piece_bytes: int) -> None:  # noqa: ANN001
    """SQLite's blob readers, in pieces smaller than a chunk and larger than all of it."""
    monkeypatch.setattr("bps.stored_bytes.PIECE_BYTES", piece_bytes)
    use_reader(monkeypatch, reader)
    raw = frame().to_csv(index=False).encode()
    with StoredBytes(settings.database_url, stored(settings, raw, "d.csv")) as stream:
        assert stream.blobs
        seek_and_read(stream, raw)
        assert type(stream.chunks).__name__ == ("DirectBlobs" if reader == "direct" else "_SqliteBlobs")
    buffer = bytearray(len(raw) + 10)
    with StoredBytes(settings.database_url, stored(settings, raw, "d.csv")) as stream:  # pieces at any offset
        stream.seek(5)
        assert stream.readinto(memoryview(buffer)[3:]) == len(raw) - 5 and buffer[3:len(raw) - 2] == raw[5:]


def database_files_open(path: str) -> int:
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            count += os.readlink(f"/proc/self/fd/{fd}") == path
    return count


@pytest.mark.parametrize("reader", ["direct", "blob", "windows"])
def test_the_connection_is_held_from_the_first_read_to_close(settings, monkeypatch, reader: str) -> None:  # noqa: ANN001
    """The pool's connection for sqlite3.Blob, one per window for queries, a connection of its
    own (the database file opened once more) for the direct reader. SQLite keeps a closed
    connection's file open while others hold locks on it (and reuses it): closed streams
    leave at most that one, however many there were."""
    from bps.db import session_factory  # noqa: PLC0415
    from bps.sqlite_blobs import database_file  # noqa: PLC0415

    raw = frame().to_csv(index=False).encode()
    dataset_id = stored(settings, raw, "d.csv")
    pool, path = session_factory(settings.database_url).kw["bind"].pool, os.path.realpath(database_file(settings.database_url))
    files, after_close = database_files_open(path), []
    for _ in range(3):
        stream = StoredBytes(settings.database_url, dataset_id, blobs=use_reader(monkeypatch, reader))
        assert pool.checkedout() == 0
        assert stream.read(200) == raw[:200]
        assert pool.checkedout() == (1 if reader == "blob" else 0)
        assert database_files_open(path) == files + (reader == "direct")
        stream.close()
        assert pool.checkedout() == 0 and stream.closed
        after_close.append(database_files_open(path))
    assert after_close == [after_close[0]] * 3 and after_close[0] <= files + 1
    with pytest.raises(ValueError, match="closed"):
        stream.read(1)


@pytest.mark.parametrize("reader", ["direct", "blob", "windows"])
def test_a_dataset_deleted_while_read_says_so(settings, monkeypatch, reader: str) -> None:  # noqa: ANN001
    from sqlalchemy import delete  # noqa: PLC0415

    from bps.models import DatasetChunk  # noqa: PLC0415

    monkeypatch.setattr("bps.stored_bytes.WINDOW_BYTES", 1)
    raw = frame().to_csv(index=False).encode()
    dataset_id = stored(settings, raw, "d.csv")
    with StoredBytes(settings.database_url, dataset_id, blobs=use_reader(monkeypatch, reader)) as stream:
        assert stream.read(50) == raw[:50]
        with session_scope(settings.database_url) as session:
            session.execute(delete(DatasetChunk).where(DatasetChunk.dataset_id == dataset_id))
        with pytest.raises(DatasetGone, match=f"dataset {dataset_id} was deleted"):
            stream.read()


@pytest.mark.postgres
def test_postgresql_reads_through_windows(postgres_settings, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setattr("bps.stored_bytes.WINDOW_BYTES", 3 * 97 + 5)
    raw = frame().to_csv(index=False).encode()
    X = np.asarray(np.random.default_rng(2).normal(size=(30, 4)), np.float32)
    buffer = io.BytesIO()
    np.savez(buffer, X=X, y=np.arange(30))
    with StoredBytes(postgres_settings.database_url, stored(postgres_settings, raw, "d.csv")) as stream:
        assert not stream.blobs
        seek_and_read(stream, raw)
    batches = dataset_batches(postgres_settings.database_url, stored(postgres_settings, buffer.getvalue(), "e.npz"),
                              "npz", ROWS)
    np.testing.assert_array_equal(np.concatenate(list(batches)), X)


def mapped_kib(path: str) -> int | None:
    """KiB of `path`'s pages resident in this process's memory maps of it (/proc/self/smaps);
    None where nothing maps it."""
    resident, in_file = None, False
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            fields = line.split(maxsplit=5)
            if "-" in fields[0] and len(fields) >= 5:  # a mapping's first line: range, perms, offset, dev, inode[, path]
                in_file = len(fields) == 6 and fields[5].rstrip("\n") == path
                if in_file and resident is None:
                    resident = 0
            elif in_file and fields[0] == "Rss:":
                resident += int(fields[1])
    return resident


def checkpointed(settings) -> str:  # noqa: ANN001
    """The database file's path, once every page is out of the WAL and in it (where SQLite reads
    pages through its memory map: not those in the WAL)."""
    from bps.db import engine  # noqa: PLC0415
    from bps.sqlite_blobs import database_file  # noqa: PLC0415

    with engine(settings.database_url).connect() as connection:
        assert connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").one()[0] == 0  # not busy
    return os.path.realpath(database_file(settings.database_url))


def test_a_mapped_direct_reader_reads_the_same_bytes_through_the_map_until_closed(settings) -> None:  # noqa: ANN001
    """The map (PRAGMA mmap_size on the reader's own connection) is smaller than the file: the
    bytes come through it and, past its end, through SQLite's page cache. The unmapped reader
    and the pool's connections map nothing."""
    from bps.db import engine  # noqa: PLC0415

    raw = pd.DataFrame({"x": np.arange(20_000) * 0.5, "y": np.arange(20_000) % 7}).to_csv(index=False).encode()
    dataset_id = stored(settings, raw, "d.csv")
    path = checkpointed(settings)
    map_bytes = os.path.getsize(path) - SQLITE_PAGE_SIZE  # the chunks' pages come last: all but the last one
    with StoredBytes(settings.database_url, dataset_id) as stream:
        seek_and_read(stream, raw)
        assert type(stream.chunks).__name__ == "DirectBlobs" and mapped_kib(path) is None
    with StoredBytes(settings.database_url, dataset_id, mmap_bytes=map_bytes) as stream:
        seek_and_read(stream, raw)
        assert 0 < mapped_kib(path) <= map_bytes // 1024
        with engine(settings.database_url).connect() as connection:
            assert connection.exec_driver_sql("PRAGMA mmap_size").scalar() == 0
    assert mapped_kib(path) is None
