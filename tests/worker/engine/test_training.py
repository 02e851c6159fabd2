"""The fit loop: real data, divergence, early stopping, resume, determinism, cancellation."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from sklearn.datasets import load_digits, make_friedman1
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPRegressor
from sklearn.preprocessing import StandardScaler

from tests.worker.engine.conftest import mlp_spec
from worker.engine import Network

RECORD_KEYS = {"epoch", "loss", "val_loss", "accuracy", "val_accuracy", "duration_s", "learning_rate", "grad_norms"}


def _blobs(rng, n=120):
    X = rng.standard_normal((n, 4))
    return X, (X[:, 0] + X[:, 1] > 0).astype(int)


def test_digits_held_out_accuracy_at_least_95_percent():
    X, y = load_digits(return_X_y=True)
    X_tr, X_te, y_tr, y_te = train_test_split(X / 16.0, y, test_size=0.25, random_state=0, stratify=y)
    spec = mlp_spec((64, "relu"), optimizer={"type": "adam", "learning_rate": 0.003}, epochs=30, batch_size=32)
    net = Network.from_spec(spec, input_shape=(64,), n_outputs=10)
    history = net.fit(X_tr, y_tr)
    accuracy = float((net.predict(X_te).argmax(1) == y_te).mean())
    assert accuracy >= 0.95, accuracy
    assert history.stop_reason == "completed" and len(history.epochs) == 30


def test_regression_r2_no_worse_than_sklearn_mlpregressor():
    X, y = make_friedman1(n_samples=1500, noise=0.5, random_state=0)
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.3, random_state=0)
    scaler = StandardScaler().fit(X_tr)
    X_tr, X_te = scaler.transform(X_tr), scaler.transform(X_te)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn's ConvergenceWarning at max_iter
        sk = MLPRegressor(hidden_layer_sizes=(64, 64), max_iter=200, random_state=0).fit(X_tr, y_tr)
    spec = mlp_spec((64, "relu"), (64, "relu"), out_activation="linear", loss="mse",
                    optimizer={"type": "adam", "learning_rate": 0.003}, epochs=200, batch_size=64)
    net = Network.from_spec(spec, input_shape=(10,), n_outputs=1)
    net.fit(X_tr, y_tr)

    def r2(pred):
        return 1 - ((y_te - pred) ** 2).sum() / ((y_te - y_te.mean()) ** 2).sum()

    ours, theirs = r2(net.predict(X_te)[:, 0]), r2(sk.predict(X_te))
    assert ours >= theirs - 1e-3, (ours, theirs)


def test_epoch_records_and_callback(rng):
    X, y = _blobs(rng)
    seen = []
    spec = mlp_spec((8, "relu"), epochs=3, validation_split=0.25,
                    lr_schedule={"type": "step", "step_size": 1, "gamma": 0.5})
    history = Network.from_spec(spec).fit(X, y, on_epoch=seen.append)
    assert seen == history.epochs and [r["epoch"] for r in seen] == [1, 2, 3]
    for record in seen:
        assert set(record) == RECORD_KEYS
        assert 0 <= record["accuracy"] <= 1 and 0 <= record["val_accuracy"] <= 1
        assert set(record["grad_norms"]) == {"0.weight", "0.bias", "1.weight", "1.bias"}
        assert all(v > 0 for v in record["grad_norms"].values())
    assert [r["learning_rate"] for r in seen] == pytest.approx([0.001, 0.0005, 0.00025])


def test_validation_last_takes_the_last_fraction(rng):
    X, y = _blobs(rng, 100)
    spec = mlp_spec((8, "relu"), epochs=1, validation_split=0.2, shuffle=False, validation="last")
    net = Network.from_spec(spec, input_shape=(4,), n_outputs=2)
    reference = Network.from_spec({**spec, "validation_split": 0.0}, input_shape=(4,), n_outputs=2)
    record = net.fit(X, y).epochs[0]
    X_val, y_val = X[80:], y[80:]
    assert record["val_accuracy"] == pytest.approx(float((net.predict(X_val).argmax(1) == y_val).mean()))
    # the first 80 rows alone train the same weights
    reference.fit(X[:80], y[:80])
    np.testing.assert_array_equal(net.params["0.weight"], reference.params["0.weight"])


def test_default_validation_is_a_seeded_stratified_draw_and_the_rest_trains(rng):
    from bps.splits import split_rows  # noqa: PLC0415

    X, y = _blobs(rng, 100)
    y = np.sort(y)  # sorted by label: the last rows would all be one class
    spec = mlp_spec((8, "relu"), epochs=1, validation_split=0.2, shuffle=False, seed=3)
    net = Network.from_spec(spec, input_shape=(4,), n_outputs=2)
    record = net.fit(X, y).epochs[0]
    train_rows, val_rows = split_rows(100, 0.2, seed=3, labels=y)
    counts = np.bincount(y[val_rows], minlength=2)
    assert len(val_rows) == 20 and np.all(np.abs(counts - 20 * np.bincount(y) / 100) <= 1)  # each class its share
    assert record["val_accuracy"] == pytest.approx(float((net.predict(X[val_rows]).argmax(1) == y[val_rows]).mean()))
    reference = Network.from_spec({**spec, "validation_split": 0.0}, input_shape=(4,), n_outputs=2)
    reference.fit(X[train_rows], y[train_rows])
    np.testing.assert_array_equal(net.params["0.weight"], reference.params["0.weight"])
    assert not np.array_equal(split_rows(100, 0.2, seed=4, labels=y)[1], val_rows)  # the seed draws it


def test_regression_records_have_no_accuracy(rng):
    X = rng.standard_normal((50, 3))
    spec = mlp_spec((4, "tanh"), out_activation="linear", loss="huber", epochs=2)
    history = Network.from_spec(spec).fit(X, X.sum(1))
    assert all(r["accuracy"] is None and r["val_accuracy"] is None for r in history.epochs)


def test_nan_loss_stops_and_names_the_epoch(rng):
    X, y = rng.standard_normal((64, 3)), rng.standard_normal(64)
    spec = mlp_spec((16, "relu"), out_activation="linear", loss="mse", epochs=20,
                    optimizer={"type": "sgd", "learning_rate": 1e6})
    history = Network.from_spec(spec).fit(X * 100, y)
    assert history.stop_reason == "diverged"
    assert history.diverged_epoch == len(history.epochs) < 20
    assert history.epochs[-1]["loss"] is None


def test_early_stopping_restores_best_weights(rng):
    X, y = _blobs(rng, 200)
    y[150:] = 1 - y[150:]  # validation labels flipped: val_loss worsens as training improves
    saved = {}
    spec = mlp_spec((16, "relu"), epochs=50, validation_split=0.25,
                    optimizer={"type": "adam", "learning_rate": 0.05},
                    early_stopping={"monitor": "val_loss", "patience": 2, "restore_best": True})
    net = Network.from_spec(spec)

    def keep(record):
        saved[record["epoch"]] = net.params["0.weight"].copy()

    history = net.fit(X, y, on_epoch=keep)
    assert history.stop_reason == "early_stopping"
    val_losses = [r["val_loss"] for r in history.epochs]
    assert history.best_epoch == 1 + int(np.argmin(val_losses))
    assert len(history.epochs) == history.best_epoch + 2
    np.testing.assert_array_equal(net.params["0.weight"], saved[history.best_epoch])


def _dropout_spec(**top):
    return {"layers": [{"type": "dense", "units": 16, "activation": "relu"}, {"type": "dropout", "rate": 0.3},
                       {"type": "batchnorm"}, {"type": "dense", "activation": "softmax"}],
            "epochs": 6, "batch_size": 16, "validation_split": 0.2, "device": "cpu",
            "optimizer": {"type": "adam", "learning_rate": 0.01}, **top}


def test_resume_gives_the_same_losses_as_an_uninterrupted_run(rng):
    X, y = _blobs(rng, 160)
    spec = _dropout_spec(lr_schedule={"type": "plateau", "patience": 0, "factor": 0.5},
                         early_stopping={"patience": 10})
    full = Network.from_spec(spec).fit(X, y)
    states = {}
    first = Network.from_spec(spec)
    first.fit(X, y, on_epoch=lambda r: states.setdefault(r["epoch"], first.training_state()))
    assert all(isinstance(v, np.ndarray) and v.dtype != object for v in states[3].values())
    resumed_net = Network.from_spec(spec)
    resumed = resumed_net.fit(X, y, resume=states[3])
    assert [r["epoch"] for r in resumed.epochs] == [4, 5, 6]
    for a, b in zip(full.epochs[3:], resumed.epochs, strict=True):
        assert (a["loss"], a["val_loss"], a["learning_rate"]) == (b["loss"], b["val_loss"], b["learning_rate"])


def test_a_cpu_fit_gathers_each_shuffled_batch_with_cpu_gather(rng, monkeypatch):
    from worker.engine import cpu_gather  # noqa: PLC0415

    gathered, gather_rows = [], cpu_gather.gather_rows
    monkeypatch.setattr(cpu_gather, "gather_rows",
                        lambda X, idx, out: gathered.append(len(idx)) or gather_rows(X, idx, out))
    X, y, batches = *_blobs(rng), []
    Network.from_spec(mlp_spec((4, "relu"), epochs=2, batch_size=8)).fit(X, y, on_batch=lambda *a: batches.append(a))
    assert len(batches) == 30 and gathered == [8] * 60  # 120 rows in batches of 8, twice; X's rows and y's


def test_same_seed_same_results_other_seed_differs(rng):
    X, y = _blobs(rng)
    runs = [Network.from_spec(_dropout_spec(seed=s)).fit(X, y).epochs for s in (5, 5, 6)]
    assert [r["loss"] for r in runs[0]] == [r["loss"] for r in runs[1]]
    assert [r["loss"] for r in runs[0]] != [r["loss"] for r in runs[2]]


def test_should_stop_cancels_at_a_batch_boundary(rng):
    X, y = _blobs(rng)
    calls = []

    def stop():
        calls.append(1)
        return len(calls) > 10

    history = Network.from_spec(_dropout_spec()).fit(X, y, should_stop=stop)
    assert history.stop_reason == "cancelled" and len(calls) == 11
    assert len(history.epochs) == 1  # 96 training rows / 16 = 6 batches per epoch


def test_gradient_clipping_bounds_the_update(rng):
    X, y = rng.standard_normal((32, 3)) * 50, rng.standard_normal(32) * 50
    spec = mlp_spec((8, "relu"), out_activation="linear", loss="mse", epochs=1, batch_size=32, shuffle=False,
                    gradient_clip_norm=0.1, optimizer={"type": "sgd", "learning_rate": 1.0}, dtype="float64")
    net = Network.from_spec(spec, input_shape=(3,), n_outputs=1)
    before = {k: v.copy() for k, v in net.params.items()}
    record = net.fit(X, y).epochs[0]
    step = math.sqrt(sum(((net.params[k] - before[k]) ** 2).sum() for k in before))
    assert step == pytest.approx(0.1, rel=1e-4)
    assert math.sqrt(sum(v**2 for v in record["grad_norms"].values())) > 1  # norms are reported before clipping


def test_vanishing_gradients_are_warned(rng):
    X, y = _blobs(rng)
    spec = mlp_spec(*[(8, "sigmoid")] * 8, epochs=1)
    history = Network.from_spec(spec).fit(X, y)
    assert any("vanishing gradients: 0.weight" in w for w in history.warnings)


def test_each_gradient_warning_is_reported_once_however_many_epochs_show_it():
    rng = np.random.default_rng(0)
    layers = [{"type": "dense", "units": 8, "activation": "sigmoid"} for _ in range(10)]
    spec = {"layers": [*layers, {"type": "dense", "units": 1}], "loss": "mse", "epochs": 30, "device": "cpu",
            "optimizer": {"type": "sgd", "learning_rate": 0.01}}
    history = Network.from_spec(spec, input_shape=(4,)).fit(rng.normal(size=(64, 4)), rng.normal(size=(64, 1)))
    assert history.warnings, "a 10-layer sigmoid stack should warn about vanishing gradients"
    names = [w.split(":")[1].split(" has ")[0].strip() for w in history.warnings]
    assert len(names) == len(set(names)) < len(layers) + 1


def test_a_non_finite_gradient_norm_is_warned_as_non_finite_not_none(rng):
    X, y = rng.standard_normal((64, 3)) * 100, rng.standard_normal(64)
    spec = mlp_spec((16, "relu"), out_activation="linear", loss="mse", epochs=20,
                    optimizer={"type": "sgd", "learning_rate": 1e6})
    history = Network.from_spec(spec).fit(X, y)
    exploding = [w for w in history.warnings if w.startswith("exploding gradients")]
    assert exploding and any("gradient norm non-finite (inf/NaN)" in w for w in exploding)
    assert not any("None" in w for w in history.warnings)


def test_a_stop_inside_an_epoch_keeps_the_weights_of_the_last_completed_epoch(rng):
    X, y = _blobs(rng)
    net, saved, batches = Network.from_spec(_dropout_spec(epochs=5)), {}, []
    calls = []

    def stop():
        calls.append(1)
        return len(calls) > 9  # epoch 2 of 6 batches each: stopped after its third batch

    def keep(record):
        saved[record["epoch"]] = {k: v.copy() for k, v in net.state_dict().items()}

    history = net.fit(X, y, on_epoch=keep, should_stop=stop, on_batch=lambda *a: batches.append(a))
    assert history.stop_reason == "cancelled" and list(saved) == [1]
    for name, value in net.state_dict().items():  # buffers (batchnorm statistics) too
        np.testing.assert_array_equal(value, saved[1][name])
    assert batches[:6] == [(1, b, 6) for b in range(1, 7)] and batches[6:] == [(2, 1, 6), (2, 2, 6), (2, 3, 6)]


def test_a_stop_with_restore_best_keeps_the_best_epoch(rng):
    X, y = _blobs(rng, 200)
    y[150:] = 1 - y[150:]  # validation labels flipped: val_loss worsens as training improves
    spec = mlp_spec((16, "relu"), epochs=50, validation_split=0.25, validation="last",
                    optimizer={"type": "adam", "learning_rate": 0.05},
                    early_stopping={"monitor": "val_loss", "patience": 100, "restore_best": True})
    net, saved = Network.from_spec(spec), {}
    history = net.fit(X, y, on_epoch=lambda r: saved.setdefault(r["epoch"], net.params["0.weight"].copy()),
                      should_stop=lambda: len(saved) >= 6)
    assert history.stop_reason == "cancelled" and history.best_epoch < 6
    np.testing.assert_array_equal(net.params["0.weight"], saved[history.best_epoch])
