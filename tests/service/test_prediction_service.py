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


PREPS = [
    Preprocessor(source="tabular", mode="multiclass", input_shape=[2], n_outputs=5,
                 classes=["=SUM(A1)", "a,b", 'say "hi"', "-x", "plain"]),
    Preprocessor(source="tabular", mode="binary", input_shape=[2], classes=[-3, 7], n_outputs=1),
    Preprocessor(source="array", mode="binary", input_shape=[2], classes=None, n_outputs=2),
    Preprocessor(source="tabular", mode="regression", input_shape=[2], n_outputs=1),
    Preprocessor(source="array", mode="regression", input_shape=[2], n_outputs=2),
]


@pytest.mark.parametrize("prep", PREPS)
def test_a_chunks_csv_is_the_writers_text_of_its_decoded_rows(prep: Preprocessor) -> None:
    """The column-at-a-time CSV of a stored chunk equals csv's writer on the decoded rows (the
    synchronous path's text): every digit of every float, labels quoted and guarded alike."""
    from service.prediction_service import _chunk_csv, _csv_text, _LabelCells  # noqa: PLC0415

    rng = np.random.default_rng(3)
    outputs = (rng.dirichlet(np.ones(prep.n_outputs), 200) if prep.mode == "multiclass"
               else rng.normal(size=(200, prep.n_outputs)) * 1e3 if prep.mode == "regression"
               else rng.uniform(size=(200, prep.n_outputs))).astype(np.float32)
    text = _chunk_csv(prep, outputs, _LabelCells())
    assert text == _csv_text(decoded_rows(prep, outputs))
    assert text.count("\n") == 200


def test_formula_like_labels_are_prefixed_with_a_quote_in_the_download() -> None:
    import csv  # noqa: PLC0415
    import io  # noqa: PLC0415

    from service.prediction_service import _chunk_csv, _LabelCells, spreadsheet_safe  # noqa: PLC0415

    for start in ("=", "+", "-", "@", "\t", "\r"):
        assert spreadsheet_safe(f"{start}1+1") == f"'{start}1+1"
    assert [spreadsheet_safe(v) for v in ("plain", "a=b", -3, -2.5, "")] == ["plain", "a=b", -3, -2.5, ""]
    prep = PREPS[0]
    outputs = np.eye(5, dtype=np.float32)  # row i predicts class i
    rows = list(csv.reader(io.StringIO(_chunk_csv(prep, outputs, _LabelCells()))))
    assert [row[0] for row in rows] == ["'=SUM(A1)", "a,b", 'say "hi"', "'-x", "plain"]
    assert [float(v) for v in rows[0][1:]] == [1.0, 0.0, 0.0, 0.0, 0.0]
