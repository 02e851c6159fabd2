"""Writes the example data sets of examples/ (committed; rerun to regenerate them).

    .venv/bin/python examples/make_examples.py     # needs scikit-learn (the dev extra)

iris.csv and wine.csv are scikit-learn's bundled copies of the UCI data sets, with string labels
and sorted by label as the originals are; digits.parquet holds the 8x8 digit images as 64
columns pixel_0..pixel_63 and a `label`; sequences.npz is a made-up sequence task: X (N, T, F)
noisy sine waves of three frequencies, y (N,) the frequency's class.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from sklearn import datasets

HERE = Path(__file__).resolve().parent
SEQUENCES, STEPS, CHANNELS, SEED = 600, 24, 2, 0


def labelled_frame(bunch, target: str) -> pd.DataFrame:  # noqa: ANN001
    frame = pd.DataFrame(bunch.data, columns=bunch.feature_names)
    frame[target] = np.asarray(bunch.target_names)[bunch.target]
    return frame


def sequences(seed: int = SEED) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, size=SEQUENCES)
    t = np.arange(STEPS) / STEPS
    phase = rng.uniform(0, 2 * np.pi, size=(SEQUENCES, 1))
    wave = np.sin(2 * np.pi * (y[:, None] + 1) * t + phase)
    X = np.stack([wave, np.cos(2 * np.pi * (y[:, None] + 1) * t + phase)], axis=-1)
    X += rng.normal(scale=0.3, size=X.shape)
    return X.astype(np.float32), y.astype(np.int64)


def main() -> None:
    labelled_frame(datasets.load_iris(), "species").to_csv(HERE / "iris.csv", index=False)
    labelled_frame(datasets.load_wine(), "class").to_csv(HERE / "wine.csv", index=False)
    digits = datasets.load_digits()
    frame = pd.DataFrame(digits.data.astype(np.float32), columns=[f"pixel_{i}" for i in range(64)])
    frame["label"] = digits.target.astype(np.int64)
    frame.to_parquet(HERE / "digits.parquet", index=False)
    X, y = sequences()
    np.savez_compressed(HERE / "sequences.npz", X=X, y=y)


if __name__ == "__main__":
    main()
