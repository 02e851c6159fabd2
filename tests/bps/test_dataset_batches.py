"""bps.dataset_batches: a stored dataset (cut into many small chunks) read back in batches of
rows equals the whole file read at once, for CSV, Parquet and .npz (C and Fortran order)."""
from __future__ import annotations

import io

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


@pytest.mark.parametrize("window_bytes", [1, 97, 3 * 97 + 5, 10**6])
def test_stored_bytes_seek_and_read_across_chunks(settings, monkeypatch, window_bytes: int) -> None:  # noqa: ANN001
    """Every read window (one chunk, several, the whole dataset), read forwards and backwards."""
    monkeypatch.setattr("bps.dataset_batches.WINDOW_BYTES", window_bytes)
    raw = frame().to_csv(index=False).encode()
    with StoredBytes(settings.database_url, stored(settings, raw, "d.csv")) as stream:
        assert stream.read() == raw
        stream.seek(-150, io.SEEK_END)
        assert stream.read(120) == raw[-150:-30]
        stream.seek(95)
        assert stream.read(10) == raw[95:105] and stream.tell() == 105


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
