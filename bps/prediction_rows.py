"""The rows an asynchronous prediction reads, a batch at a time (`read_ahead`).

An uncompressed, C-order .npz on SQLite (the large case) is read between the caller's batches,
not under them: each batch by both cores at once, `SPLIT_WAYS` byte ranges of it through as
many connections. Read in a thread of its own during the products instead, the reader took
one core from one of the two BLAS threads, and a product waits for its slowest thread: the
read cost about its whole CPU time in wall time, where split it costs about half
(`python -m bench predictions`). Everything else (CSV, Parquet, compressed or Fortran-order
.npz, other databases, whose reads may wait on I/O that a thread hides) is read ahead in a thread.
"""
from __future__ import annotations

import bisect
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

import numpy as np

from bps.dataset_batches import NpzMember, dataset_batches, npy_header, npz_member, prefetched, stored_batches
from bps.stored_bytes import StoredBytes

SPLIT_WAYS = 2  # the machines this was measured on have two cores
# The split reads' connections map the database file (bps.sqlite_blobs.DirectBlobs; SQLite caps
# the map, at 2 GiB in Debian's 3.40.1, and reads the rest as before): one copy of a mapped page
# instead of two. The 3 GB .npz of bench predictions read alone, median of 5 and of 8 runs:
# 0.336 s instead of 0.355 s, 0.300 s instead of 0.329 s (`python -m bench prediction_reads`,
# 19:56-19:59 UTC 2026-11-30); in `python -m bench predictions` the gain is within its noise.
# Not for reads in a thread beside the BLAS threads: there its page faults cost them (030f311).
SPLIT_MMAP_BYTES = 1 << 40


@dataclass(frozen=True)
class RowLayout:
    """Where X's rows lie in an uncompressed, C-order .npz stream."""
    first_row_at: int
    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def row_bytes(self) -> int:
        return int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize


def npz_row_layout(source: StoredBytes, member: NpzMember) -> RowLayout | None:
    """X's layout in the .npz `source` (`member`: its npz_member); None when X is compressed or
    in Fortran order."""
    if member.data_start is None:
        return None
    source.seek(member.data_start)
    shape, fortran, dtype = npy_header(source)
    return None if fortran else RowLayout(source.tell(), shape, dtype)


def _fill(source: StoredBytes, position: int, view: memoryview) -> int:
    source.seek(position)
    filled = 0
    while filled < len(view) and (got := source.readinto(view[filled:])):
        filled += got
    return filled


class SplitReader:
    """Fills byte ranges of a stored dataset `ways` parts at once, each through a StoredBytes
    (a connection) of its own: the calling thread reads the first part, helper threads the rest.
    The parts are cut at the stored chunks' starts where one lies near, and the source that read
    a range's last part reads the next range's first: every source reads on from where it was
    or from a chunk's start. A blob read that starts inside a chunk first walks that chunk's
    overflow pages up to there (2 MB per part and range on average with 4 MiB chunks), each read
    whole into SQLite's page cache where it lies outside the memory map."""

    def __init__(self, source: StoredBytes, ways: int = SPLIT_WAYS) -> None:
        """The parts' sources share `source`'s chunk directory and map the database file
        (SPLIT_MMAP_BYTES); `source` itself is closed."""
        self.sources = [StoredBytes(source.database_url, source.dataset_id, blobs=source.blobs,
                                    directory=source.directory, mmap_bytes=SPLIT_MMAP_BYTES)
                        for _ in range(ways)]
        source.close()
        self.helpers = ThreadPoolExecutor(max(ways - 1, 1), thread_name_prefix="dataset-read")

    def cuts(self, position: int, size: int) -> list[int]:
        """Offsets in the range where its parts begin (the first is 0): equal parts, each cut
        moved to the nearest chunk start within a quarter part of it."""
        starts, part, cuts = self.sources[0].directory.starts, size / len(self.sources), [0]
        for k in range(1, len(self.sources)):
            even = position + round(k * part)
            at = bisect.bisect_left(starts, even)
            near = min(starts[max(at - 1, 0):at + 1], key=lambda start: abs(start - even), default=even)
            cut = near if abs(near - even) <= part / 4 else even
            cuts.append(min(max(cut - position, cuts[-1]), size))
        return cuts

    def fill(self, position: int, view: memoryview) -> int:
        """Bytes read into `view` from `position` on (fewer only at the end of the data)."""
        bounds = [*self.cuts(position, len(view)), len(view)]
        parts = [(source, position + first, view[first:end])
                 for source, first, end in zip(self.sources, bounds, bounds[1:])]
        helping = [self.helpers.submit(_fill, *args) for args in parts[1:]]
        try:
            filled = _fill(*parts[0])
        finally:
            wait(helping)  # also before an error goes up: no part may still be written
        self.sources.insert(0, self.sources.pop())  # the last part's source reads on next time
        return filled + sum(future.result() for future in helping)

    def close(self) -> None:
        self.helpers.shutdown()
        for source in self.sources:
            source.close()


def split_rows(source: StoredBytes, layout: RowLayout, rows: int, start: int = 0,
               ways: int = SPLIT_WAYS) -> Iterator[np.ndarray]:
    """X's rows from `start` on, `rows` at a time, each batch read by `ways` threads when the
    caller asks for it, into one array: a batch is overwritten when the next one is asked for.
    When the first batch is asked for, a SplitReader replaces `source` (closed then) by `ways`
    StoredBytes of its own, sharing its chunk directory and mapping the database file; they are
    closed at the end (or when the generator is closed)."""
    total = layout.shape[0]
    reader = SplitReader(source, ways)
    try:
        batch = np.empty((max(min(rows, total - start), 0), *layout.shape[1:]), layout.dtype)
        for first in range(start, total, rows):
            n = min(rows, total - first)
            view = memoryview(batch[:n]).cast("B")
            filled = reader.fill(layout.first_row_at + first * layout.row_bytes, view)
            if filled < len(view):
                raise ValueError(f"X.npy ends after {first + filled // max(layout.row_bytes, 1)} of {total} rows")
            yield batch[:n]
    finally:
        reader.close()


def read_ahead(database_url: str, dataset_id: str, fmt: str, rows: int, depth: int = 2,
               start: int = 0) -> Iterator[Any]:
    """The batches of `rows` rows from row `start` on, as dataset_batches gives them. A batch
    stays intact until the caller asks for the one after it, and memory holds at most depth + 2
    batches: `split_rows`' one, or dataset_batches `prefetched` `depth` ahead with .npz rows in
    a ring of depth + 2 arrays (one being read, `depth` queued, the caller's). An .npz on SQLite
    has its chunk directory and zip directory read once, here, whichever way it is read."""
    if fmt != "npz" or not database_url.startswith("sqlite"):
        return prefetched(dataset_batches(database_url, dataset_id, fmt, rows, ring=depth + 2, start=start), depth)
    source = StoredBytes(database_url, dataset_id)
    try:
        member = npz_member(source)
        layout = npz_row_layout(source, member)
    except BaseException:
        source.close()
        raise
    if layout is not None:
        return split_rows(source, layout, rows, start)
    return prefetched(stored_batches(source, "npz", rows, depth + 2, start, member), depth)
