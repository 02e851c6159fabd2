"""bps.prediction_rows: read_ahead's batches are the dataset's rows, once each and in order,
whether split between threads (an uncompressed, C-order .npz on SQLite) or read ahead in a
thread (everything else), with at most a few batches in memory."""
from __future__ import annotations

import io
import time

import numpy as np
import pytest
from sqlalchemy import delete, event, func, select

from bps.dataset_batches import npz_member
from bps.db import session_factory, session_scope
from bps.models import DatasetChunk
from bps import prediction_rows
from bps.prediction_rows import RowLayout, npz_row_layout, read_ahead, split_rows
from bps.stored_bytes import DatasetGone, StoredBytes
from tests.bps.test_dataset_batches import count_zip_directory_reads, frame, stored
from tests.bps.test_stored_bytes import checkpointed, mapped_kib

ROWS = 61


def npz(X: np.ndarray, compressed: bool = False) -> bytes:
    buffer = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buffer, X=X, y=np.arange(len(X)))
    return buffer.getvalue()


def rows(order: str = "C") -> np.ndarray:
    return np.asarray(np.random.default_rng(4).normal(size=(ROWS, 3, 2)), np.float32, order=order)


def opened(settings, dataset_id: str) -> tuple[StoredBytes, RowLayout | None]:  # noqa: ANN001
    """A StoredBytes of the dataset (for split_rows, which closes it) and X's layout in it."""
    source = StoredBytes(settings.database_url, dataset_id)
    return source, npz_row_layout(source, npz_member(source))


def layout_of(settings, dataset_id: str) -> RowLayout | None:  # noqa: ANN001
    source, layout = opened(settings, dataset_id)
    source.close()
    return layout


def test_the_layout_says_where_the_rows_are_and_none_for_compressed_or_fortran_order(settings) -> None:  # noqa: ANN001
    X = rows()
    layout = layout_of(settings, stored(settings, npz(X), "d.npz"))
    assert layout.shape == X.shape and layout.dtype == X.dtype and layout.row_bytes == 24
    assert layout_of(settings, stored(settings, npz(X, compressed=True), "c.npz")) is None
    assert layout_of(settings, stored(settings, npz(rows("F")), "f.npz")) is None


@pytest.mark.parametrize("ways", [1, 2, 3])
@pytest.mark.parametrize("start", [0, 9, 60, 61])
def test_split_batches_hold_every_row_from_start_in_one_reused_array(settings, ways: int, start: int) -> None:  # noqa: ANN001
    """Rows of 24 bytes in chunks of 97: every batch's parts cross chunk boundaries."""
    X = rows()
    source, layout = opened(settings, stored(settings, npz(X), "d.npz"))
    seen, addresses = [], set()
    for batch in split_rows(source, layout, 4, start=start, ways=ways):
        seen.append(batch.copy())
        addresses.add(batch.__array_interface__["data"][0])
    np.testing.assert_array_equal(np.concatenate([X[:0], *seen]), X[start:])
    assert [len(b) for b in seen] == [4] * ((ROWS - start) // 4) + ([(ROWS - start) % 4] if (ROWS - start) % 4 else [])
    assert len(addresses) <= 1
    assert session_factory(settings.database_url).kw["bind"].pool.checkedout() == 0


@pytest.mark.parametrize("ways", [2, 3])
def test_every_part_is_read_on_from_where_its_source_stopped_or_from_a_chunk_start(settings, monkeypatch,  # noqa: ANN001
                                                                                 ways: int) -> None:
    """Batches of 80 rows (1,920 bytes) over chunks of 97 bytes: a chunk start lies near every
    even cut, so no part but the very first begins inside a chunk that its source had not reached
    (where SQLite would walk the chunk's pages up to it first); the rows are all there, in order."""
    X = np.asarray(np.random.default_rng(5).normal(size=(1000, 3, 2)), np.float32)
    source, layout = opened(settings, stored(settings, npz(X), "d.npz"))
    reads, fill = [], prediction_rows._fill

    def recorded(source, position: int, view: memoryview) -> int:  # noqa: ANN001
        reads.append((source, position, position + len(view), source.directory.starts))
        return fill(source, position, view)

    monkeypatch.setattr(prediction_rows, "_fill", recorded)
    seen = [batch.copy() for batch in split_rows(source, layout, 80, ways=ways)]
    np.testing.assert_array_equal(np.concatenate(seen), X)
    stopped = {}
    for source, position, end, starts in reads:  # the first batch's first part begins where X does
        assert position in (stopped.get(id(source)), layout.first_row_at) or position in starts, position
        stopped[id(source)] = end
    assert len(reads) == ways * len(seen) and len(stopped) == ways


@pytest.mark.parametrize("kind", ["npz", "npz-compressed", "npz-fortran"])
def test_read_ahead_gives_every_batch_once_in_order_from_a_bounded_ring(settings, kind: str) -> None:  # noqa: ANN001
    """Each batch holds its rows while the caller works on it (a slow caller lets a reader
    thread fill its whole ring): split, one array; read ahead, no more than depth + 2 (a
    Fortran-order X is read whole: its batches are views of one array)."""
    X = rows("F" if kind == "npz-fortran" else "C")
    dataset_id = stored(settings, npz(X, compressed=kind == "npz-compressed"), "d.npz")
    for depth in (1, 2):
        seen, addresses = [], set()
        for k, batch in enumerate(read_ahead(settings.database_url, dataset_id, "npz", 4, depth=depth)):
            time.sleep(0.01)
            np.testing.assert_array_equal(batch, X[4 * k:4 * k + 4])  # still intact after a reader ran ahead
            seen.append(len(batch))
            addresses.add(batch.__array_interface__["data"][0])
        assert seen == [4] * 15 + [1]
        if kind != "npz-fortran":
            assert len(addresses) == (1 if kind == "npz" else depth + 2)


@pytest.mark.parametrize("kind", ["npz", "npz-compressed", "npz-fortran"])
def test_read_ahead_reads_the_chunk_and_zip_directories_once(settings, monkeypatch, kind: str) -> None:  # noqa: ANN001
    """One query for the chunks' seqs, lengths and rowids, and one read of the zip's central
    directory, whether the rows are split between threads or read ahead in one."""
    X = rows("F" if kind == "npz-fortran" else "C")
    dataset_id = stored(settings, npz(X, compressed=kind == "npz-compressed"), "d.npz")
    queries, zip_reads = [], count_zip_directory_reads(monkeypatch)

    def count_queries(_connection, _cursor, statement: str, *_args) -> None:  # noqa: ANN001, ANN002
        if "length(dataset_chunks.data)" in statement:
            queries.append(statement)

    bind = session_factory(settings.database_url).kw["bind"]
    event.listen(bind, "before_cursor_execute", count_queries)
    try:
        batches = [batch.copy() for batch in read_ahead(settings.database_url, dataset_id, "npz", 16)]
    finally:
        event.remove(bind, "before_cursor_execute", count_queries)
    np.testing.assert_array_equal(np.concatenate(batches), X)
    assert (len(queries), len(zip_reads)) == (1, 1)


def test_read_ahead_reads_tables_from_a_row(settings) -> None:  # noqa: ANN001
    buffer = io.BytesIO()
    frame().to_csv(buffer, index=False)
    dataset_id = stored(settings, buffer.getvalue(), "d.csv")
    batches = list(read_ahead(settings.database_url, dataset_id, "csv", 7, start=9))
    assert [len(b) for b in batches] == [5, 7, 7, 2]
    assert list(batches[0].index) == list(range(9, 14))


def test_rows_missing_at_the_end_and_a_dataset_deleted_while_read_say_so(settings) -> None:  # noqa: ANN001
    X = rows()
    dataset_id = stored(settings, npz(X), "d.npz")
    layout = layout_of(settings, dataset_id)
    with session_scope(settings.database_url) as session:  # X's last rows (and y) gone
        last = session.scalar(select(func.max(DatasetChunk.seq)).where(DatasetChunk.dataset_id == dataset_id))
        session.execute(delete(DatasetChunk).where(DatasetChunk.dataset_id == dataset_id,
                                                   DatasetChunk.seq > (layout.first_row_at + 40 * 24) // 97))
    assert last > (layout.first_row_at + 40 * 24) // 97
    with pytest.raises(ValueError, match=f"X.npy ends after 4[0-9] of {ROWS} rows"):
        list(split_rows(StoredBytes(settings.database_url, dataset_id), layout, 16))
    batches = split_rows(StoredBytes(settings.database_url, dataset_id), layout, 16)
    np.testing.assert_array_equal(next(batches), X[:16])
    with session_scope(settings.database_url) as session:
        session.execute(delete(DatasetChunk).where(DatasetChunk.dataset_id == dataset_id))
    with pytest.raises(DatasetGone, match=f"dataset {dataset_id} was deleted"):
        next(batches)
    assert session_factory(settings.database_url).kw["bind"].pool.checkedout() == 0


def test_split_reads_go_through_memory_maps_of_the_database_file(settings) -> None:  # noqa: ANN001
    """SPLIT_MMAP_BYTES on every part's connection: while the batches are read, the file's pages
    are in this process's maps of it, and they go with the reader."""
    X = np.asarray(np.random.default_rng(6).normal(size=(4000, 3, 2)), np.float32)
    dataset_id = stored(settings, npz(X), "d.npz")
    path = checkpointed(settings)
    seen, resident = [], []
    for batch in read_ahead(settings.database_url, dataset_id, "npz", 1000):
        seen.append(batch.copy())
        resident.append(mapped_kib(path))
    np.testing.assert_array_equal(np.concatenate(seen), X)
    assert all(kib and kib > 0 for kib in resident) and mapped_kib(path) is None
