"""Preprocessor: standardisation, one-hot, labels both ways, imputation, JSON round trip."""
from __future__ import annotations

import io

import numpy as np
import pytest

from bps.preprocessing import Preprocessor, prepare_training_data
from bps.problems import Unprocessable

CSV = b"num,colour,label\n1,red,yes\n2,blue,no\n3,red,yes\n6,green,no\n"


def test_tabular_multiclass() -> None:
    X, y, prep = prepare_training_data(CSV, "csv", target="label", features=None, input_shape=None,
                                       task="cross_entropy")
    assert X.shape == (4, 4) and prep.features == ["num", "colour"] and prep.classes == ["no", "yes"]
    np.testing.assert_allclose(X[:, 0], (np.array([1, 2, 3, 6]) - 3) / np.std([1, 2, 3, 6]))
    np.testing.assert_array_equal(X[:, 1:], [[0, 0, 1], [1, 0, 0], [0, 0, 1], [0, 1, 0]])  # blue, green, red
    assert y.dtype == np.int64 and y.tolist() == [1, 0, 1, 0]
    preds, probs = prep.decode(np.array([[0.9, 0.1], [0.2, 0.8]]))
    assert preds == ["no", "yes"] and probs == [[0.9, 0.1], [0.2, 0.8]]


def test_json_round_trip_transforms_the_same() -> None:
    X, _y, prep = prepare_training_data(CSV, "csv", target="label", features=["colour", "num"], input_shape=[2, 2],
                                        task="cross_entropy")
    again = Preprocessor.from_json(prep.to_json())
    assert again == prep and Preprocessor.from_json(__import__("json").dumps(prep.to_json())) == prep
    np.testing.assert_allclose(again.transform_instances([["red", 1], ["blue", 2]]), X[:2])
    assert again.transform_instances([["purple", 1]])[0].ravel()[:3].tolist() == [0, 0, 0]  # unknown category


def test_binary_and_regression_targets() -> None:
    _X, y, prep = prepare_training_data(CSV, "csv", target="label", features=None, input_shape=None,
                                        task="binary_cross_entropy")
    assert y.shape == (4, 1) and y.ravel().tolist() == [1, 0, 1, 0] and prep.n_outputs == 1
    preds, probs = prep.decode(np.array([[0.7], [0.2]]))
    assert preds == ["yes", "no"] and probs[0] == pytest.approx([0.3, 0.7])
    _X, y, prep = prepare_training_data(CSV, "csv", target="num", features=["colour"], input_shape=None, task="mse")
    assert y.shape == (4, 1) and prep.classes is None and prep.decode(np.array([[2.5]]))[0] == [2.5]


def test_integer_labels_stay_integers() -> None:
    _X, y, prep = prepare_training_data(b"x,k\n1,10\n2,20\n3,10\n", "csv", target="k", features=None,
                                        input_shape=None, task="cross_entropy")
    assert prep.classes == [10, 20] and all(type(c) is int for c in prep.classes)
    assert prep.decode(np.array([[0.1, 0.9]]))[0] == [20]


def test_missing_values_need_imputation() -> None:
    raw = b"a,b,label\n1,,x\n3,4,y\n5,6,x\n"
    with pytest.raises(Unprocessable, match="'b'") as info:
        prepare_training_data(raw, "csv", target="label", features=None, input_shape=None, task="cross_entropy")
    assert info.value.errors[0]["loc"] == ["b"]
    X, _y, prep = prepare_training_data(raw, "csv", target="label", features=None, input_shape=None,
                                        task="cross_entropy", impute="median")
    assert np.isfinite(X).all() and prep.encoders[1]["fill"] == 5.0


@pytest.mark.parametrize("rows", [[[None, "red"]], [[float("inf"), "red"]], [[1.0, None]]])
def test_a_missing_value_at_prediction_is_refused_with_advice_that_fits_a_prediction(rows) -> None:
    """The model cannot take "impute" any more: the advice is to clean the rows or train with it."""
    _X, _y, prep = prepare_training_data(CSV, "csv", target="label", features=None, input_shape=None,
                                         task="cross_entropy")
    with pytest.raises(Unprocessable) as info:
        prep.transform_instances(rows)
    assert "clean the data, or train with \"impute\"" in info.value.detail
    assert "submit the job" not in info.value.detail


def test_bad_targets_are_named() -> None:
    with pytest.raises(Unprocessable, match="non-integer"):
        prepare_training_data(b"x,t\n1,0.5\n2,1.5\n", "csv", target="t", features=None, input_shape=None,
                              task="cross_entropy")
    with pytest.raises(Unprocessable, match="not numeric"):
        prepare_training_data(CSV, "csv", target="label", features=None, input_shape=None, task="mse")
    with pytest.raises(Unprocessable, match="input_shape"):
        prepare_training_data(CSV, "csv", target="label", features=None, input_shape=[3], task="cross_entropy")


def test_npz_arrays() -> None:
    buffer = io.BytesIO()
    X = np.arange(24, dtype=np.float32).reshape(6, 2, 2)
    np.savez(buffer, X=X, y=np.array(["b", "a", "b", "a", "b", "a"]))
    X_out, y, prep = prepare_training_data(buffer.getvalue(), "npz", target=None, features=None, input_shape=[4],
                                           task="cross_entropy")
    assert X_out.shape == (6, 4) and y.tolist() == [1, 0, 1, 0, 1, 0] and prep.classes == ["a", "b"]
    np.testing.assert_array_equal(prep.transform_instances(X[:2].tolist()), X_out[:2])
    with pytest.raises(Unprocessable, match="shape"):
        prep.transform_instances([[1.0, 2.0, 3.0]])


def test_standardisation_and_imputation_are_fitted_on_the_training_rows_only() -> None:
    # With validation "last" the last 20% are validation rows (the engine's split): their values
    # must not leak into the statistics the training rows are scaled with.
    rows = [f"{v},{'nan' if i == 1 else v},{'a' if i < 8 else 'b'},{i % 2}" for i, v in
            enumerate([1, 2, 3, 4, 5, 6, 7, 8, 100, 200])]
    raw = ("x,z,colour,label\n" + "\n".join(rows) + "\n").encode()
    X, _, prep = prepare_training_data(raw, "csv", target="label", features=None, input_shape=None,
                                       task="cross_entropy", impute="mean", validation_split=0.2,
                                       validation="last")
    train = np.array([1, 2, 3, 4, 5, 6, 7, 8], dtype=float)
    np.testing.assert_allclose(X[:8, 0], (train - train.mean()) / train.std())
    z_train = np.array([1, 3, 4, 5, 6, 7, 8], dtype=float)
    np.testing.assert_allclose(X[[0, 2], 1], (z_train[:2] - z_train.mean()) / z_train.std())
    assert X[1, 1] == 0.0  # the NaN, imputed with the training mean, standardises to 0
    assert X.shape[1] == 4  # x, z and both colours: "b" occurs only in validation rows, still one-hot


def test_a_boolean_where_a_number_belongs_is_refused_naming_row_and_column() -> None:
    _X, _y, prep = prepare_training_data(CSV, "csv", target="label", features=None, input_shape=None,
                                         task="cross_entropy")
    with pytest.raises(Unprocessable) as refused:
        prep.transform_instances([[1, "red"], [True, "blue"]])
    assert "'num'" in refused.value.detail and "row 1" in refused.value.detail and "boolean" in refused.value.detail
    assert refused.value.errors[0]["loc"] == ["num"]
    import pandas as pd  # noqa: PLC0415

    with pytest.raises(Unprocessable, match="row 0 holds false, a boolean"):  # records: a column of booleans
        prep.transform_frame(pd.DataFrame.from_records([{"num": False, "colour": "red"}]))


def test_a_model_trained_on_a_boolean_column_takes_booleans_and_older_models_still_do() -> None:
    flags = b"flag,num,label\nTrue,1,yes\nFalse,2,no\nTrue,3,yes\nFalse,6,no\n"
    X, _y, prep = prepare_training_data(flags, "csv", target="label", features=None, input_shape=None,
                                        task="cross_entropy")
    assert [e["boolean"] for e in prep.encoders] == [True, False]
    np.testing.assert_allclose(prep.transform_instances([[True, 1], [False, 2]]), X[:2])
    legacy = prep.to_json()
    for encoder in legacy["encoders"]:
        del encoder["boolean"]  # a model stored before the flag: true reads as 1, as it did
    np.testing.assert_allclose(Preprocessor.from_json(legacy).transform_instances([[True, True]]),
                               prep.transform_instances([[True, 1]]))


def test_nested_instances_with_booleans_follow_each_columns_rule_after_the_width_check() -> None:
    flags = b"flag,num,label\nTrue,1,yes\nFalse,2,no\nTrue,3,yes\nFalse,6,no\n"
    X, _y, prep = prepare_training_data(flags, "csv", target="label", features=None, input_shape=None,
                                        task="cross_entropy")
    np.testing.assert_allclose(prep.transform_instances([[[True, 1]], [[False, 2]]]), X[:2])
    with pytest.raises(Unprocessable) as refused:
        prep.transform_instances([[[True, False]]])
    assert refused.value.errors[0]["loc"] == ["num"] and "boolean" in refused.value.detail
    with pytest.raises(Unprocessable, match="each instance must be a list of the 2 features"):
        prep.transform_instances([[[True, 1, 2]]])


@pytest.mark.parametrize("instances", [[[[1.0, 2.0], [True, 0.0]]], [[1.0, 2.0, 0.0, False]]])
def test_a_boolean_in_an_array_models_instances_is_refused_naming_its_position(instances) -> None:  # noqa: ANN001
    buffer = io.BytesIO()
    rng = np.random.default_rng(0)
    np.savez(buffer, X=rng.normal(size=(8, 2, 2)), y=np.arange(8) % 2)
    _X, _y, prep = prepare_training_data(buffer.getvalue(), "npz", target=None, features=None, input_shape=None,
                                         task="cross_entropy")
    with pytest.raises(Unprocessable, match="boolean where a number belongs") as refused:
        prep.transform_instances(instances)
    assert refused.value.errors[0]["loc"] == ["instances", 0, *((1, 0) if len(instances[0]) == 2 else (3,))]
