"""The download's columns and rows for every kind of model: `prediction` and
probability_<label> per class, prediction_<i> per regression target or multi-label output."""
from __future__ import annotations

import numpy as np
import pytest

from bps.preprocessor import Preprocessor
from service.prediction_service import column_names, decoded_rows


@pytest.mark.parametrize(("prep", "outputs", "columns", "rows"), [
    (Preprocessor(source="tabular", mode="multiclass", input_shape=[2], classes=["a", "b", "c"], n_outputs=3),
     [[0.1, 0.7, 0.2]], ["prediction", "probability_a", "probability_b", "probability_c"], [["b", 0.1, 0.7, 0.2]]),
    (Preprocessor(source="tabular", mode="binary", input_shape=[2], classes=[3, 7], n_outputs=1),
     [[0.25]], ["prediction", "probability_3", "probability_7"], [[3, 0.75, 0.25]]),
    (Preprocessor(source="array", mode="binary", input_shape=[2], classes=None, n_outputs=2),
     [[0.25, 0.5]], ["prediction_0", "prediction_1", "probability_0", "probability_1"], [[0, 1, 0.25, 0.5]]),
    (Preprocessor(source="tabular", mode="regression", input_shape=[2], n_outputs=1),
     [[1.5]], ["prediction"], [[1.5]]),
    (Preprocessor(source="array", mode="regression", input_shape=[2], n_outputs=2),
     [[1.5, -2.0]], ["prediction_0", "prediction_1"], [[1.5, -2.0]]),
])
def test_columns_and_rows_match(prep: Preprocessor, outputs: list, columns: list, rows: list) -> None:
    assert column_names(prep) == columns
    assert decoded_rows(prep, np.asarray(outputs)) == rows
    assert all(len(row) == len(columns) for row in rows)
