"""Which rows validate (the spec's `validation_split` and `validation`), computed the same way by
the engine (to split X) and by the preprocessing (to fit its statistics on the training rows only).

`validation: "shuffle"` (the default): a random `validation_split` fraction drawn from the
spec's seed; for classification stratified by label, so every class keeps its share in both
parts (as scikit-learn's `train_test_split(stratify=y)`). `validation: "last"`: the last rows,
before any shuffling (as Keras). Both keep each part in the data's order. The split depends only
on which rows share a label, never on the labels' values or codes: raw labels and the engine's
class indices give the same split."""
from __future__ import annotations

from typing import Any

import numpy as np

VALIDATION_MODES = ("shuffle", "last")
_SPLIT_STREAM = 1  # the split's random stream, apart from the per-epoch shuffles of the same seed


def split_sizes(n_rows: int, validation_split: float) -> tuple[int, int]:
    """(training rows, validation rows); the training part is int(n * (1 - split)), as Keras."""
    n_train = int(n_rows * (1 - validation_split)) if validation_split > 0 else n_rows
    return n_train, n_rows - n_train


def split_problem(n_rows: int, validation_split: float) -> str | None:
    """Why `validation_split` cannot split `n_rows` rows (no training or no validation row), or None."""
    n_train, n_val = split_sizes(n_rows, validation_split)
    if validation_split > 0 and (n_train < 1 or n_val < 1):
        return (f"validation_split {validation_split:g} of {n_rows} rows leaves {n_train} training and "
                f"{n_val} validation rows; each needs at least 1: choose a split between "
                f"{1 / max(n_rows, 1):.3g} and {1 - 1 / max(n_rows, 1):.3g}, or 0 for no validation")
    return None


def split_rows(n_rows: int, validation_split: float, *, mode: str = "shuffle", seed: int = 0,
               labels: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """(training row indices, validation row indices), each ascending. `labels` (1-D, one per
    row) stratifies a shuffled split; None splits without regard to labels."""
    n_train, n_val = split_sizes(n_rows, validation_split)
    if n_val == 0 or mode == "last":
        return np.arange(n_train), np.arange(n_train, n_rows)
    rng = np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(_SPLIT_STREAM,)))
    if labels is None:
        chosen = rng.permutation(n_rows)[:n_val]
    else:
        chosen = _stratified_choice(np.asarray(labels).reshape(n_rows), n_val, rng)
    is_val = np.zeros(n_rows, bool)
    is_val[chosen] = True
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)


def _stratified_choice(labels: np.ndarray, n_val: int, rng: np.random.Generator) -> np.ndarray:
    import pandas as pd  # noqa: PLC0415

    groups, _ = pd.factorize(labels, use_na_sentinel=False)  # first-appearance order: any labelling alike
    counts = np.bincount(groups)
    per_class = _class_quotas(counts, n_val, rng)
    members = np.argsort(groups, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    picks = [rng.permutation(members[start:start + count])[:take]
             for start, count, take in zip(starts, counts, per_class, strict=True)]
    return np.concatenate(picks) if picks else np.zeros(0, np.int64)


def _class_quotas(counts: np.ndarray, n_val: int, rng: np.random.Generator) -> np.ndarray:
    """Validation rows per class, `n_val` in all, proportional to the class sizes (largest
    remainders); a spare row goes first to a class that still keeps a training row."""
    quotas = counts * n_val / counts.sum()
    taken = np.floor(quotas).astype(np.int64)
    spare = n_val - int(taken.sum())
    keeps_a_training_row = taken + 1 < counts
    order = np.lexsort((rng.random(len(counts)), taken - quotas, ~keeps_a_training_row))
    taken[order[:spare]] += 1
    return taken


def classes_only_in_validation(labels: Any, train_rows: np.ndarray, val_rows: np.ndarray) -> list[Any]:
    """The labels that validation rows hold and training rows do not (the model cannot learn them)."""
    labels = np.asarray(labels).reshape(len(labels), -1)[:, 0]
    missing = set(pd_unique(labels[val_rows])) - set(pd_unique(labels[train_rows]))
    return sorted(missing, key=str)


def pd_unique(values: np.ndarray) -> list[Any]:
    import pandas as pd  # noqa: PLC0415

    return [v.item() if isinstance(v, np.generic) else v for v in pd.unique(values)]


def validation_class_warnings(y: Any, classes: list[Any] | None, *, validation_split: float, mode: str,
                              seed: int) -> list[str]:
    """A warning when the engine's validation rows hold a class its training rows lack. `y`: the
    engine's classification targets (class indices, or 0/1 in one column), `classes` the labels."""
    y = np.asarray(y)
    if validation_split <= 0 or (y.ndim == 2 and y.shape[1] > 1):
        return []
    codes = y.reshape(-1)
    train_rows, val_rows = split_rows(len(codes), validation_split, mode=mode, seed=seed, labels=codes)
    labels = np.asarray(classes, dtype=object)[codes.astype(np.int64)] if classes else codes
    unseen = classes_only_in_validation(labels, train_rows, val_rows)
    if not unseen:
        return []
    return [f"the validation rows hold class(es) {unseen} that no training row has, so validation cannot "
            "score them: use \"validation\": \"shuffle\" (stratified) or add rows of those classes"]
