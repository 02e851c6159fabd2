"""bps.dataset_batches: a stored dataset (cut into many small chunks) read back in batches of
rows equals the whole file read at once, for CSV, Parquet and .npz (C and Fortran order)."""
from __future__ import annotations

import contextlib
import io
import os

import numpy as np
import pandas as pd
import pytest

from bps.dataset_batches import StoredBytes, dataset_batches
from bps.db import session_scope
from bps.datasets import create_dataset
from bps.tenants import create_api_key

ROWS = 7


def stored(settings, raw: bytes, filename: str) -> str:  # noqa: ANN001
    with session_scope(settings.database_url) as session:
        create_api_key(session=session, tenant_name="batches")
        from bps.models import Tenant  # noqa: PLC0415

        tenant = session.query(Tenant).filter_by(name="batches").one()
        dataset = create_dataset(session=session, tenant_id=tenant.id, raw=raw, filename=filename, name=None,
                                 chunk_bytes=97, max_rows=10**6, max_array_bytes=10**9)
        return dataset.id


def frame() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame({"x": rng.normal(size=30), "y": rng.integers(0, 5, 30), "s": [f"v{i % 4}" for i in range(30)]})


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_tables_in_batches_equal_the_whole_table(settings, fmt: str) -> None:  # noqa: ANN001
    whole = frame()
    buffer = io.BytesIO()
    whole.to_csv(buffer, index=False) if fmt == "csv" else whole.to_parquet(buffer, index=False)
    dataset_id = stored(settings, buffer.getvalue(), f"d.{fmt}")
    batches = list(dataset_batches(settings.database_url, dataset_id, fmt, ROWS))
    assert [len(b) for b in batches] == [7, 7, 7, 7, 2]
    pd.testing.assert_frame_equal(pd.concat(batches, ignore_index=True), whole, check_dtype=False)


@pytest.mark.parametrize("order", ["C", "F"])
def test_npz_X_in_batches_equals_the_array(settings, order: str) -> None:  # noqa: ANN001
    X = np.asarray(np.random.default_rng(1).normal(size=(30, 2, 3)), order=order)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, X=X, y=np.arange(30))
    dataset_id = stored(settings, buffer.getvalue(), "d.npz")
    batches = list(dataset_batches(settings.database_url, dataset_id, "npz", ROWS))
    assert [b.shape for b in batches] == [(7, 2, 3)] * 4 + [(2, 2, 3)]
    np.testing.assert_array_equal(np.concatenate(batches), X)


@pytest.mark.parametrize("start", [9, 14, 29, 30])
@pytest.mark.parametrize("kind", ["csv", "parquet", "npz", "npz-compressed", "npz-fortran"])
def test_batches_from_a_row_hold_every_row_from_it_on(settings, kind: str, start: int) -> None:  # noqa: ANN001
    X = np.asarray(np.random.default_rng(2).normal(size=(30, 2, 3)), order="F" if kind == "npz-fortran" else "C")
    buffer, fmt = io.BytesIO(), kind.split("-")[0]
    if fmt == "npz":
        (np.savez_compressed if kind == "npz-compressed" else np.savez)(buffer, X=X, y=np.arange(30))
    else:
        frame().to_csv(buffer, index=False) if fmt == "csv" else frame().to_parquet(buffer, index=False)
    dataset_id = stored(settings, buffer.getvalue(), f"d.{fmt}")
    batches = list(dataset_batches(settings.database_url, dataset_id, fmt, ROWS, start=start))
    assert sum(len(b) for b in batches) == 30 - start and all(0 < len(b) <= ROWS for b in batches)
    if fmt == "npz":
        np.testing.assert_array_equal(np.concatenate([X[:0], *batches]), X[start:])
    else:
        expected = frame().iloc[start:].reset_index(drop=True)
        pd.testing.assert_frame_equal(pd.concat([expected.iloc[:0], *batches], ignore_index=True), expected,
                                      check_dtype=False)


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
    monkeypatch.setattr("bps.dataset_batches.WINDOW_BYTES", window_bytes)
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
    monkeypatch.setattr("bps.dataset_batches.PIECE_BYTES", piece_bytes)
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

    from bps.dataset_batches import DatasetGone  # noqa: PLC0415
    from bps.models import DatasetChunk  # noqa: PLC0415

    monkeypatch.setattr("bps.dataset_batches.WINDOW_BYTES", 1)
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
    monkeypatch.setattr("bps.dataset_batches.WINDOW_BYTES", 3 * 97 + 5)
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


def test_prefetched_keeps_the_order_and_raises_the_readers_error_in_place() -> None:
    from bps.dataset_batches import prefetched

    def source():  # noqa: ANN202
        yield from range(5)
        raise ValueError("row 5 is broken")

    seen = []
    with pytest.raises(ValueError, match="row 5"):
        for item in prefetched(source()):
            seen.append(item)
    assert seen == [0, 1, 2, 3, 4]
    assert list(prefetched(iter(range(100)), depth=1)) == list(range(100))


def test_prefetched_reads_at_most_depth_ahead() -> None:
    """Memory stays bounded: the reader thread has made at most `depth` batches beyond the one
    the consumer holds (plus the one it is blocked handing over), whatever the consumer's pace."""
    import time  # noqa: PLC0415

    from bps.dataset_batches import prefetched  # noqa: PLC0415

    made = []

    def source():  # noqa: ANN202
        for i in range(20):
            made.append(i)
            yield i

    for depth in (1, 2, 3):
        made.clear()
        for k, item in enumerate(prefetched(source(), depth=depth)):
            time.sleep(0.005)  # a slow consumer: the reader runs as far ahead as it may
            assert item == k and len(made) <= k + 1 + depth + 1
        assert made == list(range(20))


@pytest.mark.parametrize("compressed", [False, True])
def test_an_npz_zip_directory_is_read_once(settings, monkeypatch, compressed: bool) -> None:  # noqa: ANN001
    import zipfile  # noqa: PLC0415

    X = np.arange(60.0).reshape(30, 2)
    buffer = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buffer, X=X, y=np.arange(30))
    dataset_id = stored(settings, buffer.getvalue(), "d.npz")
    reads, read_directory = [], zipfile.ZipFile._RealGetContents

    def counted(archive) -> None:  # noqa: ANN001
        reads.append(archive)
        read_directory(archive)

    monkeypatch.setattr(zipfile.ZipFile, "_RealGetContents", counted)
    batches = list(dataset_batches(settings.database_url, dataset_id, "npz", ROWS))
    np.testing.assert_array_equal(np.concatenate(batches), X)
    assert len(reads) == 1
