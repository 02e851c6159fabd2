"""A stored dataset read in batches of rows, for predictions over datasets larger than memory
should hold at once: the stored chunks are read one at a time (CSV), or spooled to a temporary
file that Parquet and .npz are read from a batch at a time. Batch k always holds rows
[k * rows, (k + 1) * rows), so a run that takes over can skip the batches already done."""
from __future__ import annotations

import io
import tempfile
import zipfile
from collections.abc import Iterator
from typing import IO, Any

import numpy as np
import pandas as pd
from sqlalchemy import select

from bps.db import session_scope
from bps.models import DatasetChunk


class StoredBytes(io.RawIOBase):
    """The uploaded bytes of a dataset as a read-only stream, one DatasetChunk row in memory."""

    def __init__(self, database_url: str, dataset_id: str) -> None:
        super().__init__()
        self.database_url, self.dataset_id = database_url, dataset_id
        self.seq, self.buffer, self.position = 0, b"", 0

    def readable(self) -> bool:
        return True

    def _next_chunk(self) -> bool:
        with session_scope(self.database_url) as session:
            data = session.scalar(select(DatasetChunk.data).where(
                DatasetChunk.dataset_id == self.dataset_id, DatasetChunk.seq == self.seq))
        if data is None:
            return False
        self.seq, self.buffer, self.position = self.seq + 1, bytes(data), 0
        return True

    def readinto(self, target: Any) -> int:
        while self.position >= len(self.buffer):
            if not self._next_chunk():
                return 0
        size = min(len(target), len(self.buffer) - self.position)
        target[:size] = self.buffer[self.position:self.position + size]
        self.position += size
        return size


def _spooled(source: IO[bytes]) -> IO[bytes]:
    spool = tempfile.TemporaryFile()  # noqa: SIM115  (closed by the caller's generator)
    while block := source.read(1 << 20):
        spool.write(block)
    spool.seek(0)
    return spool


def _csv_batches(source: IO[bytes], rows: int) -> Iterator[pd.DataFrame]:
    with pd.read_csv(io.BufferedReader(source, 1 << 20), encoding="utf-8-sig", chunksize=rows) as reader:
        yield from reader


def _parquet_batches(source: IO[bytes], rows: int) -> Iterator[pd.DataFrame]:
    import pyarrow.parquet as pq  # noqa: PLC0415

    with _spooled(source) as spool:
        for batch in pq.ParquetFile(spool).iter_batches(batch_size=rows):
            yield batch.to_pandas()


def _npy_rows(handle: IO[bytes], rows: int) -> Iterator[np.ndarray]:
    """Rows of a C-order .npy stream, `rows` at a time (the header was checked at upload)."""
    version = np.lib.format.read_magic(handle)
    read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, fortran, dtype = read_header(handle)
    if fortran:  # column-major: rows are not contiguous, so read it whole
        yield from np.array_split(np.lib.format.read_array(handle, allow_pickle=False).reshape(shape),
                                  range(rows, shape[0], rows))
        return
    row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
    for start in range(0, shape[0], rows):
        count = min(rows, shape[0] - start)
        data = handle.read(count * row_bytes)
        yield np.frombuffer(data, dtype=dtype).reshape((count, *shape[1:]))


def _npz_batches(source: IO[bytes], rows: int) -> Iterator[np.ndarray]:
    with _spooled(source) as spool, zipfile.ZipFile(spool) as archive, archive.open("X.npy") as handle:
        yield from _npy_rows(handle, rows)


def dataset_batches(database_url: str, dataset_id: str, fmt: str, rows: int) -> Iterator[Any]:
    """DataFrames (CSV, Parquet) or X arrays (.npz) of `rows` rows each, in order."""
    readers = {"csv": _csv_batches, "parquet": _parquet_batches, "npz": _npz_batches}
    with StoredBytes(database_url, dataset_id) as source:
        yield from readers[fmt](source, rows)
