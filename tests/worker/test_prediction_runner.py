"""worker.prediction_runner.model_inputs: finite .npz rows pass as they are (no float64 copy);
a NaN or an infinity anywhere sends the batch through the preprocessor's fill, and a float32
sum that overflows only costs that copy, never the values."""
from __future__ import annotations

import numpy as np
import pytest

from bps.preprocessor import Preprocessor
from worker.prediction_runner import model_inputs


def preprocessor(fill: float | None) -> Preprocessor:
    return Preprocessor(source="array", mode="regression", input_shape=[2, 3], n_outputs=1, array_fill=fill)


def test_finite_rows_are_the_batch_itself_reshaped() -> None:
    batch = np.arange(24, dtype=np.float32).reshape(4, 6)
    inputs = model_inputs(preprocessor(None), batch)
    assert inputs.dtype == np.float32 and inputs.shape == (4, 2, 3)
    assert np.shares_memory(inputs, batch)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_non_finite_value_is_filled(bad: float) -> None:
    batch = np.ones((4, 6), np.float32)
    batch[2, 5] = bad
    inputs = model_inputs(preprocessor(-1.0), batch)
    assert inputs.dtype == np.float64
    assert inputs[2, 1, 2] == -1.0 and np.count_nonzero(inputs == -1.0) == 1


def test_rows_whose_sum_overflows_keep_their_values() -> None:
    batch = np.full((4, 6), np.finfo(np.float32).max / 2, np.float32)
    inputs = model_inputs(preprocessor(-1.0), batch)
    np.testing.assert_array_equal(inputs, batch.reshape(4, 2, 3).astype(np.float64))
