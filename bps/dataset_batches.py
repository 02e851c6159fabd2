"""A stored dataset read in batches of rows, for predictions over datasets larger than memory
should hold at once: the stored chunks are read as one seekable stream (a piece of a chunk or a
window of chunks in memory at a time), which CSV is parsed from in order and Parquet and .npz
are read from a batch at a time.
Batches may start at any row (`start`): a run that takes over reads on from its first row not
yet done (.npz seeks straight to it; CSV and Parquet read and drop the rows before it)."""
from __future__ import annotations

import bisect
import io
import queue
import sqlite3
import struct
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any, NamedTuple

import numpy as np
import pandas as pd
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
    unmaps cost the products more (bench predictions: 4.7-5.4 s with it, 4.2-4.7 s without)
    and the mapped pages count as resident."""

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
    `directory`: the chunk directory another StoredBytes of the dataset (same `blobs`) read."""

    def __init__(self, database_url: str, dataset_id: str, blobs: bool | None = None,
                 directory: ChunkDirectory | None = None) -> None:
        super().__init__()
        self.database_url, self.dataset_id = database_url, dataset_id
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
                                        lambda: DatasetGone(self.dataset_id))

    def close(self) -> None:
        if self.chunks is not None:
            chunks, self.chunks = self.chunks, None
            chunks.close()
        super().close()


def _csv_batches(source: IO[bytes], rows: int) -> Iterator[pd.DataFrame]:
    with pd.read_csv(io.BufferedReader(source, 1 << 20), encoding="utf-8-sig", chunksize=rows) as reader:
        yield from reader


def _parquet_batches(source: IO[bytes], rows: int) -> Iterator[pd.DataFrame]:
    import pyarrow.parquet as pq  # noqa: PLC0415

    for batch in pq.ParquetFile(source).iter_batches(batch_size=rows):
        yield batch.to_pandas()


def npy_header(handle: IO[bytes]) -> tuple[tuple[int, ...], bool, np.dtype]:
    """(shape, Fortran order, dtype) of the .npy stream at `handle`, which is left at its data."""
    version = np.lib.format.read_magic(handle)
    read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    return read_header(handle)


def _npy_rows(handle: IO[bytes], rows: int, ring: int = 0, start: int = 0) -> Iterator[np.ndarray]:
    """Rows `start`, ... of a C-order .npy stream, `rows` at a time (the header was checked at upload).
    `ring` > 0: the batches are read into that many arrays, reused in turn (no fresh pages to
    fault in per batch)."""
    shape, fortran, dtype = npy_header(handle)
    if fortran:  # column-major: rows are not contiguous, so read it whole (and no further: y may follow)
        size = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        whole = np.frombuffer(handle.read(size), dtype=dtype).reshape(shape[::-1]).T
        yield from (whole[first:first + rows] for first in range(start, shape[0], rows))
        return
    row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
    if start:
        handle.seek(min(start, shape[0]) * row_bytes, io.SEEK_CUR)
    arrays: list[np.ndarray] = []
    for k, first in enumerate(range(start, shape[0], rows)):
        n = min(rows, shape[0] - first)
        if not ring:
            batch = np.empty((n, *shape[1:]), dtype)
        else:
            if len(arrays) < ring:
                arrays.append(np.empty((min(rows, shape[0]), *shape[1:]), dtype))
            batch = arrays[k % ring][:n]
        view, filled = memoryview(batch).cast("B"), 0
        while filled < len(view):  # straight into the array: no intermediate bytes object
            got = handle.readinto(view[filled:])
            if not got:
                raise ValueError(f"X.npy ends after {first + filled // max(row_bytes, 1)} of {shape[0]} rows")
            filled += got
        yield batch


class NpzMember(NamedTuple):
    """X.npy's entry in an .npz stream, from one read of its zip directory."""
    info: zipfile.ZipInfo
    data_start: int | None  # stored uncompressed (np.savez): where its bytes start in the stream
    archive: zipfile.ZipFile | None  # compressed: the open archive, to decompress it from


def npz_member(source: IO[bytes]) -> NpzMember:
    buffered = io.BufferedReader(source, 1 << 20)
    archive = zipfile.ZipFile(buffered)
    info = archive.getinfo("X.npy")
    if info.compress_type != zipfile.ZIP_STORED:
        return NpzMember(info, None, archive)
    archive.close()
    buffered.detach()  # `source` is read directly below: the buffer's end must not close it
    source.seek(info.header_offset)
    local = source.read(zipfile.sizeFileHeader)  # fixed part; then the name and the extra field
    name_length, extra_length = struct.unpack("<HH", local[26:30])
    return NpzMember(info, info.header_offset + zipfile.sizeFileHeader + name_length + extra_length, None)


def npz_batches(source: IO[bytes], rows: int, ring: int = 0, start: int = 0,
                member: NpzMember | None = None) -> Iterator[np.ndarray]:
    """X's rows (`member`: npz_member(source), when the caller has read it). An uncompressed
    member is read straight from `source`, without zipfile's extra copy and CRC pass (the file
    was checked at upload)."""
    member = member or npz_member(source)
    if member.archive is not None:
        with member.archive, member.archive.open(member.info) as handle:
            yield from _npy_rows(handle, rows, ring, start)
        return
    source.seek(member.data_start)
    yield from _npy_rows(source, rows, ring, start)


def _from_row(frames: Iterator[pd.DataFrame], start: int) -> Iterator[pd.DataFrame]:
    """`frames` without their first `start` rows."""
    for frame in frames:
        if start < len(frame):
            yield frame.iloc[start:] if start else frame
            start = 0
        else:
            start -= len(frame)


def dataset_batches(database_url: str, dataset_id: str, fmt: str, rows: int, ring: int = 0,
                    start: int = 0) -> Iterator[Any]:
    """DataFrames (CSV, Parquet) or X arrays (.npz) of the rows from `start` on, in order, `rows`
    rows each (a table's first batch after `start` may be shorter). `ring` > 0: .npz rows go
    into that many arrays in turn (a batch is overwritten `ring` batches later)."""
    with StoredBytes(database_url, dataset_id) as source:
        if fmt == "npz":
            yield from npz_batches(source, rows, ring, start)
        else:
            yield from _from_row({"csv": _csv_batches, "parquet": _parquet_batches}[fmt](source, rows), start)


_END = object()


def prefetched(batches: Iterator[Any], depth: int = 2) -> Iterator[Any]:
    """`batches`, read `depth` ahead in a thread: the database reads and parsing overlap the
    caller's work on the previous batch (NumPy's products and SQLite's reads release the GIL).
    An exception in the reader is raised here, in order."""
    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def read() -> None:
        try:
            for batch in batches:
                ready.put(batch)
                if stop.is_set():
                    return
            ready.put(_END)
        except BaseException as exc:  # noqa: BLE001  (handed to the consumer)
            ready.put(exc)

    threading.Thread(target=read, name="dataset-prefetch", daemon=True).start()
    try:
        while (item := ready.get()) is not _END:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while not ready.empty():  # unblock a reader waiting on a full queue
            ready.get_nowait()
