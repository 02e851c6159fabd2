"""A stored dataset read in batches of rows, for predictions over datasets larger than memory
should hold at once: the stored chunks are read as one seekable stream (bps.stored_bytes),
which CSV is parsed from in order and Parquet and .npz are read from a batch at a time.
Batches may start at any row (`start`): a run that takes over reads on from its first row not
yet done (.npz seeks straight to it; CSV and Parquet read and drop the rows before it)."""
from __future__ import annotations

import io
import queue
import struct
import threading
import zipfile
from collections.abc import Iterator
from typing import IO, Any, NamedTuple

import numpy as np
import pandas as pd

from bps.stored_bytes import StoredBytes


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
    yield from stored_batches(StoredBytes(database_url, dataset_id), fmt, rows, ring, start)


def stored_batches(source: StoredBytes, fmt: str, rows: int, ring: int = 0, start: int = 0,
                   member: NpzMember | None = None) -> Iterator[Any]:
    """dataset_batches from a StoredBytes the caller opened (closed here at the end), and for an
    .npz its npz_member when already read."""
    with source:
        if fmt == "npz":
            yield from npz_batches(source, rows, ring, start, member)
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
