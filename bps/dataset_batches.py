"""A stored dataset read in batches of rows, for predictions over datasets larger than memory
should hold at once: the stored chunks are read as one seekable stream, one chunk in memory at a
time, which CSV is parsed from in order and Parquet and .npz are read from a batch at a time.
Batch k always holds rows [k * rows, (k + 1) * rows), so a run that takes over can skip the
batches already done."""
from __future__ import annotations

import bisect
import io
import queue
import struct
import threading
import zipfile
from collections.abc import Iterator
from typing import IO, Any

import numpy as np
import pandas as pd
from sqlalchemy import Connection, bindparam, func, select

from bps.db import connection_scope, session_scope
from bps.models import DatasetChunk


_CHUNKS_DATA = (select(DatasetChunk.data).where(DatasetChunk.dataset_id == bindparam("d"),
                                                 DatasetChunk.seq.between(bindparam("first"), bindparam("last")))
                .order_by(DatasetChunk.seq))
WINDOW_BYTES = 16 * 1024 * 1024  # read per query: a few DatasetChunk rows, not one
MMAP_BYTES = 1 << 40  # SQLite caps it at its build's limit (2 GiB by default)


def _read_window(connection: Connection, params: dict[str, Any]) -> list[memoryview]:
    """The window's chunks. SQLite reads them through a memory map of the file (half the CPU
    of a read() per 4 KiB page, measured), unmapped at once: the process's resident memory
    never holds more of the file than the window."""
    sqlite = connection.dialect.name == "sqlite"
    if sqlite:
        connection.exec_driver_sql(f"PRAGMA mmap_size={MMAP_BYTES}")
    try:
        return [memoryview(data) for data in connection.scalars(_CHUNKS_DATA, params)]
    finally:
        if sqlite:
            connection.exec_driver_sql("PRAGMA mmap_size=0")


class StoredBytes(io.RawIOBase):
    """The uploaded bytes of a dataset as a read-only, seekable stream; a window of consecutive
    DatasetChunk rows (about WINDOW_BYTES) in memory at a time, read by one query."""

    def __init__(self, database_url: str, dataset_id: str) -> None:
        super().__init__()
        self.database_url, self.dataset_id = database_url, dataset_id
        with session_scope(database_url) as session:
            sizes = session.execute(select(DatasetChunk.seq, func.length(DatasetChunk.data)).where(
                DatasetChunk.dataset_id == dataset_id).order_by(DatasetChunk.seq)).all()
        self.seqs = [seq for seq, _ in sizes]
        self.starts = [0]
        for _, size in sizes:
            self.starts.append(self.starts[-1] + int(size))
        self.position, self.first, self.window = 0, 0, []

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.starts[-1]}[whence]
        self.position = max(0, base + offset)
        return self.position

    def _chunk(self, index: int) -> memoryview:
        """Chunk `index`'s bytes, loading the window that starts with it when needed (views:
        readinto's slices of them are not copies)."""
        if not self.first <= index < self.first + len(self.window):
            last = bisect.bisect_right(self.starts, self.starts[index] + WINDOW_BYTES) - 2
            last = min(max(last, index), len(self.seqs) - 1)
            with connection_scope(self.database_url) as connection:  # Core: no ORM work per window
                self.window = _read_window(connection, {"d": self.dataset_id, "first": self.seqs[index],
                                                        "last": self.seqs[last]})
            self.first = index
        return self.window[index - self.first]

    def readinto(self, target: Any) -> int:
        """Fills `target` across chunks (short only at the end: pyarrow expects full reads)."""
        view, filled = memoryview(target).cast("B"), 0
        while filled < len(view) and self.position < self.starts[-1]:
            index = bisect.bisect_right(self.starts, self.position) - 1
            chunk, offset = self._chunk(index), self.position - self.starts[index]
            size = min(len(view) - filled, len(chunk) - offset)
            view[filled:filled + size] = chunk[offset:offset + size]
            filled += size
            self.position += size
        return filled


def _csv_batches(source: IO[bytes], rows: int) -> Iterator[pd.DataFrame]:
    with pd.read_csv(io.BufferedReader(source, 1 << 20), encoding="utf-8-sig", chunksize=rows) as reader:
        yield from reader


def _parquet_batches(source: IO[bytes], rows: int) -> Iterator[pd.DataFrame]:
    import pyarrow.parquet as pq  # noqa: PLC0415

    for batch in pq.ParquetFile(source).iter_batches(batch_size=rows):
        yield batch.to_pandas()


def _npy_rows(handle: IO[bytes], rows: int) -> Iterator[np.ndarray]:
    """Rows of a C-order .npy stream, `rows` at a time (the header was checked at upload)."""
    version = np.lib.format.read_magic(handle)
    read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, fortran, dtype = read_header(handle)
    if fortran:  # column-major: rows are not contiguous, so read it whole
        whole = np.frombuffer(handle.read(), dtype=dtype).reshape(shape[::-1]).T
        yield from np.split(whole, range(rows, shape[0], rows))
        return
    row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
    for start in range(0, shape[0], rows):
        batch = np.empty((min(rows, shape[0] - start), *shape[1:]), dtype)
        view, filled = memoryview(batch).cast("B"), 0
        while filled < len(view):  # straight into the array: no intermediate bytes object
            got = handle.readinto(view[filled:])
            if not got:
                raise ValueError(f"X.npy ends after {start + filled // max(row_bytes, 1)} of {shape[0]} rows")
            filled += got
        yield batch


def _npz_batches(source: IO[bytes], rows: int) -> Iterator[np.ndarray]:
    """X's rows. An uncompressed member (np.savez) is read straight from `source`, without
    zipfile's extra copy and CRC pass (the file was checked at upload)."""
    with zipfile.ZipFile(io.BufferedReader(source, 1 << 20)) as archive:
        info = archive.getinfo("X.npy")
        if info.compress_type != zipfile.ZIP_STORED:
            with archive.open(info) as handle:
                yield from _npy_rows(handle, rows)
            return
    source.seek(info.header_offset)
    local = source.read(zipfile.sizeFileHeader)  # fixed part; then the name and the extra field
    name_length, extra_length = struct.unpack("<HH", local[26:30])
    source.seek(info.header_offset + zipfile.sizeFileHeader + name_length + extra_length)
    yield from _npy_rows(source, rows)


def dataset_batches(database_url: str, dataset_id: str, fmt: str, rows: int) -> Iterator[Any]:
    """DataFrames (CSV, Parquet) or X arrays (.npz) of `rows` rows each, in order."""
    readers = {"csv": _csv_batches, "parquet": _parquet_batches, "npz": _npz_batches}
    with StoredBytes(database_url, dataset_id) as source:
        yield from readers[fmt](source, rows)


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
