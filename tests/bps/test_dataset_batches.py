"""bps.dataset_batches: a stored dataset (cut into many small chunks) read back in batches of
rows equals the whole file read at once, for CSV, Parquet and .npz (C and Fortran order). The
stream under it: tests/bps/test_stored_bytes.py."""
from __future__ import annotations

import io
import zipfile

import numpy as np
import pandas as pd
import pytest

from bps.dataset_batches import dataset_batches
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


def count_zip_directory_reads(monkeypatch) -> list[zipfile.ZipFile]:  # noqa: ANN001
    """From now on, each archive whose central directory zipfile reads (ZipFile._RealGetContents),
    once a read: the upload's own reads (stored()) are done before this is called."""
    reads, read_directory = [], zipfile.ZipFile._RealGetContents

    def counted(archive: zipfile.ZipFile) -> None:
        reads.append(archive)
        read_directory(archive)

    monkeypatch.setattr(zipfile.ZipFile, "_RealGetContents", counted)
    return reads


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
    X = np.arange(60.0).reshape(30, 2)
    buffer = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buffer, X=X, y=np.arange(30))
    dataset_id = stored(settings, buffer.getvalue(), "d.npz")
    reads = count_zip_directory_reads(monkeypatch)
    batches = list(dataset_batches(settings.database_url, dataset_id, "npz", ROWS))
    np.testing.assert_array_equal(np.concatenate(batches), X)
    assert len(reads) == 1
