"""Column profiles (bps/column_profiles.py): the NumPy block path equals the column-by-column one."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bps.column_profiles import _dtype_name, profile_frame, profile_values


def _column_by_column(frame):  # noqa: ANN001, ANN202
    return [profile_values(str(name), frame[name], _dtype_name(frame[name].dtype)) for name in frame.columns]


@pytest.mark.parametrize("block_values", [1, 7, 1 << 22])
def test_block_profiles_equal_the_column_by_column_profile(block_values: int) -> None:
    """The NumPy block path (wide files) gives what profile_values gives per column, in order."""
    rng = np.random.default_rng(3)
    floats = rng.normal(size=(9, 4)) * 10.0 ** rng.integers(-3, 300, size=4)
    floats[[0, 4], 1], floats[2, 2], floats[:, 3] = np.nan, -np.inf, np.nan
    frame = pd.DataFrame({
        "f0": floats[:, 0], "i": rng.integers(-3, 3, 9), "s": ["a", None, "b", "a", "c", None, "a", "b", "b"],
        "f1": floats[:, 1], "b": rng.integers(0, 2, 9).astype(bool), "f2": floats[:, 2], "f3": floats[:, 3],
        "n": pd.array([1, None, 3, 3, 4, 5, 6, 7, 8], dtype="Int64"), "r": np.round(floats[:, 0]),
    })
    expected = _column_by_column(frame)
    actual = profile_frame(frame, block_values=block_values)
    assert [p["name"] for p in actual] == list(frame.columns)
    for got, want in zip(actual, expected):
        assert got.keys() == want.keys(), (got, want)
        for key, value in want.items():
            same = value == pytest.approx(got[key], rel=1e-12) if isinstance(value, float) else value == got[key]
            assert same and type(got[key]) is type(value), (key, got, want)
