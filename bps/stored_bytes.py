"""A stored dataset's uploaded bytes as one read-only, seekable stream (StoredBytes), read from
its DatasetChunk rows a piece of a chunk or a window of chunks at a time: what
bps.dataset_batches parses and bps.prediction_rows reads in byte ranges."""
from __future__ import annotations

import bisect
import io
import sqlite3
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, func, literal_column, select

from bps import sqlite_blobs
from bps.db import connection_scope, engine, session_scope
from bps.models import DatasetChunk
from bps.problems import Unprocessable


_CHUNKS_DATA = (select(DatasetChunk.data).where(DatasetChunk.dataset_id == bindparam("d"),
                                                 DatasetChunk.seq.between(bindparam("first"), bindparam("last")))
                .order_by(DatasetChunk.seq))
WINDOW_BYTES = 16 * 1024 * 1024  # read per query: a few DatasetChunk rows, not one
PIECE_BYTES = 1 << 18  # sqlite3.Blob: bytes per read, copied on while still in the CPU's cache


class DatasetGone(Unprocessable):
    def __init__(self, dataset_id: str) -> None:
        super().__init__(f"dataset {dataset_id} was deleted while it was being read: upload it again and ask "
                         "for a new prediction")


class _Windows:
    """Any database: a window of consecutive chunks (about WINDOW_BYTES) read by one query and
    kept as views (the copies out of them are the only ones)."""

    def __init__(self, database_url: str, dataset_id: str, seqs: list[int], starts: list[int]) -> None:
        self.database_url, self.dataset_id, self.seqs, self.starts = database_url, dataset_id, seqs, starts
        self.first, self.window = 0, []

    def copy(self, index: int, offset: int, view: memoryview) -> int:
        if not self.first <= index < self.first + len(self.window):
            last = bisect.bisect_right(self.starts, self.starts[index] + WINDOW_BYTES) - 2
            last = min(max(last, index), len(self.seqs) - 1)
            params = {"d": self.dataset_id, "first": self.seqs[index], "last": self.seqs[last]}
            with connection_scope(self.database_url) as connection:  # Core: no ORM work per window
                self.window = [memoryview(data) for data in connection.scalars(_CHUNKS_DATA, params)]
            if len(self.window) != last - index + 1:
                raise DatasetGone(self.dataset_id)
            self.first = index
        chunk = self.window[index - self.first]
        size = min(len(view), len(chunk) - offset)
        view[:size] = chunk[offset:offset + size]
        return size

    def close(self) -> None:
        self.window = []


class _SqliteBlobs:
    """SQLite: each chunk read in place through sqlite3's Blob, PIECE_BYTES at a time: SQLite
    copies its pages straight into the piece, where a SELECT first assembles the whole chunk in
    a buffer of its own that sqlite3 then copies into bytes. No memory map of the file: alone
    it read faster, but in a worker whose BLAS threads hold both cores its page faults and
    unmaps cost the products more (bench predictions ran slower with it than without) and the
    mapped pages count as resident. (The split reads between batches map it: bps.prediction_rows.)"""

    def __init__(self, database_url: str, dataset_id: str, rowids: list[int]) -> None:
        self.dataset_id, self.rowids = dataset_id, rowids
        self.raw = engine(database_url).raw_connection()
        self.blob, self.index = None, -1

    def copy(self, index: int, offset: int, view: memoryview) -> int:
        if index != self.index:
            self.close_blob()
            try:
                self.blob = self.raw.driver_connection.blobopen(DatasetChunk.__tablename__, "data",
                                                                self.rowids[index], readonly=True)
            except sqlite3.OperationalError:
                raise DatasetGone(self.dataset_id) from None
            self.index = index
        self.blob.seek(offset)
        data = self.blob.read(min(len(view), PIECE_BYTES))
        view[:len(data)] = data
        return len(data)

    def close_blob(self) -> None:
        if self.blob is not None:
            self.blob.close()
            self.blob, self.index = None, -1

    def close(self) -> None:
        try:
            self.close_blob()
        finally:
            self.raw.close()  # back to the pool


@dataclass(frozen=True)
class ChunkDirectory:
    """A dataset's DatasetChunk rows in order: seqs, where each starts in the stream (and the
    stream's end), and their rowids where they are read as SQLite blobs (else empty)."""
    seqs: list[int]
    starts: list[int]
    rowids: list[int]


def chunk_directory(database_url: str, dataset_id: str, rowids: bool) -> ChunkDirectory:
    columns = [DatasetChunk.seq, func.length(DatasetChunk.data)] + ([literal_column("rowid")] if rowids else [])
    with session_scope(database_url) as session:
        rows = session.execute(select(*columns).where(DatasetChunk.dataset_id == dataset_id)
                               .order_by(DatasetChunk.seq)).all()
    starts = [0]
    for row in rows:
        starts.append(starts[-1] + int(row[1]))
    return ChunkDirectory([row[0] for row in rows], starts, [row[2] for row in rows] if rowids else [])


class StoredBytes(io.RawIOBase):
    """The uploaded bytes of a dataset as a read-only, seekable stream, read a piece of its
    DatasetChunk rows at a time (on SQLite bps.sqlite_blobs' DirectBlobs, with a connection of
    its own, or where it cannot be had _SqliteBlobs; _Windows elsewhere or when `blobs` is
    False). The database connection is taken at the first read and given back by close().
    `directory`: the chunk directory another StoredBytes of the dataset (same `blobs`) read.
    `mmap_bytes`: DirectBlobs' memory map of the database file (none with 0 and in the other readers)."""

    def __init__(self, database_url: str, dataset_id: str, blobs: bool | None = None,
                 directory: ChunkDirectory | None = None, mmap_bytes: int = 0) -> None:
        super().__init__()
        self.database_url, self.dataset_id, self.mmap_bytes = database_url, dataset_id, mmap_bytes
        self.blobs = database_url.startswith("sqlite") if blobs is None else blobs
        self.directory = directory or chunk_directory(database_url, dataset_id, self.blobs)
        self.position, self.chunks = 0, None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.directory.starts[-1]}[whence]
        self.position = max(0, base + offset)
        return self.position

    def readinto(self, target: Any) -> int:
        """Fills `target` across chunks (short only at the end: pyarrow expects full reads)."""
        if self.closed:
            raise ValueError("I/O operation on a closed StoredBytes")
        if self.chunks is None:
            self.chunks = self._reader()
        view, filled = memoryview(target).cast("B"), 0
        starts = self.directory.starts
        while filled < len(view) and self.position < starts[-1]:
            index = bisect.bisect_right(starts, self.position) - 1
            size = self.chunks.copy(index, self.position - starts[index], view[filled:])
            filled += size
            self.position += size
        return filled

    def _reader(self) -> Any:
        if not self.blobs:
            return _Windows(self.database_url, self.dataset_id, self.directory.seqs, self.directory.starts)
        lib, path = sqlite_blobs.direct_library(), sqlite_blobs.database_file(self.database_url)
        if lib is None or path is None:
            return _SqliteBlobs(self.database_url, self.dataset_id, self.directory.rowids)
        return sqlite_blobs.DirectBlobs(lib, path, DatasetChunk.__tablename__, "data", self.directory.rowids,
                                        lambda: DatasetGone(self.dataset_id), self.mmap_bytes)

    def close(self) -> None:
        if self.chunks is not None:
            chunks, self.chunks = self.chunks, None
            chunks.close()
        super().close()
