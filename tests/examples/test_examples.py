"""examples/: every spec trains on its example data set, in the engine, to a good held-out score
quickly; the data files are what make_examples.py writes."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from worker.engine import Network

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
# spec file -> (data file, target column or None for .npz, input_shape or None, least held-out score)
CASES = {
    "iris_mlp.json": ("iris.csv", "species", None, 0.9),
    "wine_batchnorm_dropout.json": ("wine.csv", "class", None, 0.9),
    "iris_regression.json": ("iris.csv", "petal width (cm)", None, 0.8),
    "digits_cnn.json": ("digits.parquet", "label", (1, 8, 8), 0.9),
    "sequences_lstm_gru.json": ("sequences.npz", None, None, 0.9),
    "sequences_rnn.json": ("sequences.npz", None, None, 0.9),
}


def load(data_file: str, target: str | None, input_shape) -> tuple[np.ndarray, np.ndarray]:  # noqa: ANN001
    path = EXAMPLES / data_file
    if target is None:
        with np.load(path, allow_pickle=False) as arrays:
            return arrays["X"].astype(np.float64), arrays["y"]
    frame = pd.read_csv(path) if path.suffix == ".csv" else pd.read_parquet(path)
    y = frame.pop(target).to_numpy()
    numeric = frame.select_dtypes("number").to_numpy(dtype=np.float64)
    X = (numeric - numeric.mean(axis=0)) / np.where(numeric.std(axis=0) > 0, numeric.std(axis=0), 1.0)
    if y.dtype.kind not in "fc":
        y = np.unique(y, return_inverse=True)[1]
    return (X.reshape(len(X), *input_shape) if input_shape else X), y


def held_out_score(net: Network, X: np.ndarray, y: np.ndarray) -> float:
    output = net.predict(X)
    if net.spec["loss"] == "cross_entropy":
        return float(np.mean(output.argmax(axis=1) == y))
    residual = ((output.ravel() - y) ** 2).sum()
    return float(1.0 - residual / ((y - y.mean()) ** 2).sum())  # R²


@pytest.mark.parametrize("spec_file", sorted(CASES))
def test_example_spec_trains_to_a_good_held_out_score(spec_file: str) -> None:
    data_file, target, input_shape, least = CASES[spec_file]
    X, y = load(data_file, target, input_shape)
    order = np.random.default_rng(0).permutation(len(X))
    test, train = order[: len(X) // 5], order[len(X) // 5:]
    spec = json.loads((EXAMPLES / "specs" / spec_file).read_text())
    net = Network.from_spec(spec, input_shape=X.shape[1:], device="cpu")
    net.fit(X[train], y[train])
    assert held_out_score(net, X[test], y[test]) >= least


def test_every_spec_file_is_covered_and_the_data_are_as_described() -> None:
    assert sorted(p.name for p in (EXAMPLES / "specs").glob("*.json")) == sorted(CASES)
    iris = pd.read_csv(EXAMPLES / "iris.csv")
    assert iris.shape == (150, 5) and list(iris["species"].unique()) == ["setosa", "versicolor", "virginica"]
    assert iris["species"].is_monotonic_increasing, "sorted by label, as the original"
    assert pd.read_csv(EXAMPLES / "wine.csv").shape == (178, 14)
    digits = pd.read_parquet(EXAMPLES / "digits.parquet")
    assert digits.shape == (1797, 65) and set(digits["label"]) == set(range(10))
    with np.load(EXAMPLES / "sequences.npz", allow_pickle=False) as arrays:
        assert arrays["X"].ndim == 3 and arrays["y"].shape == arrays["X"].shape[:1]


def test_the_readme_table_names_each_spec_with_its_data_and_target() -> None:
    text = (EXAMPLES.parent / "README.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith("| `") and "specs/" in line]
    documented = {}
    for row in rows:
        data, target, specs = (cell.strip() for cell in row.strip("|").split("|"))
        for spec in re.findall(r"specs/(\w+\.json)", specs):
            documented[spec] = (re.match(r"`([^`]+)`", data).group(1), (re.findall(r"`([^`]+)`", target) or [None])[0])
    assert documented == {spec: case[:2] for spec, case in CASES.items()}
