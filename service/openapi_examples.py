"""Request examples of the OpenAPI document (shown and sent by /docs' "Try it out"): one per
layer family, the three ways to ask for predictions, and an upload. The ids are placeholders:
use the ids your own uploads and jobs answered with."""
from __future__ import annotations

from typing import Any

DATASET_ID = "<dataset id from POST /v1/datasets>"


def _example(summary: str, value: dict[str, Any]) -> dict[str, Any]:
    return {"summary": summary, "value": value}


def _softmax_out() -> dict[str, str]:
    return {"type": "dense", "activation": "softmax"}


REQUEST_EXAMPLES: dict[str, dict[str, Any]] = {
    "JobCreate": {
        "mlp": _example("Dense classifier on examples/iris.csv", {
            "dataset_id": DATASET_ID, "target": "species",
            "spec": {"layers": [{"type": "dense", "units": 16, "activation": "relu"}, _softmax_out()],
                     "loss": "cross_entropy", "optimizer": {"type": "adam", "learning_rate": 0.01},
                     "epochs": 50, "batch_size": 16, "validation_split": 0.2}}),
        "regression": _example("Regression of petal width on examples/iris.csv", {
            "dataset_id": DATASET_ID, "target": "petal width (cm)",
            "spec": {"layers": [{"type": "dense", "units": 32, "activation": "tanh"}, {"type": "dense", "units": 1}],
                     "loss": "mse", "optimizer": {"type": "sgd", "learning_rate": 0.05, "momentum": 0.9},
                     "lr_schedule": {"type": "cosine", "t_max": 60}, "epochs": 60, "batch_size": 16}}),
        "batchnorm_dropout": _example("Batch norm and dropout on examples/wine.csv", {
            "dataset_id": DATASET_ID, "target": "class",
            "spec": {"layers": [{"type": "dense", "units": 32, "activation": "relu"}, {"type": "batchnorm"},
                                {"type": "dropout", "rate": 0.2}, _softmax_out()],
                     "optimizer": {"type": "adamw", "learning_rate": 0.01}, "epochs": 40, "validation_split": 0.2,
                     "early_stopping": {"monitor": "val_loss", "patience": 10}}}),
        "cnn": _example("CNN on examples/digits.parquet (64 pixel columns as 1x8x8 images)", {
            "dataset_id": DATASET_ID, "target": "label", "input_shape": [1, 8, 8],
            "spec": {"layers": [{"type": "conv2d", "filters": 8, "kernel_size": 3, "padding": "same",
                                 "activation": "relu"},
                                {"type": "maxpool2d", "pool_size": 2}, {"type": "flatten"},
                                {"type": "dense", "units": 32, "activation": "relu"}, _softmax_out()],
                     "optimizer": {"type": "adam", "learning_rate": 0.005}, "epochs": 8, "batch_size": 64}}),
        "recurrent": _example("LSTM then GRU on examples/sequences.npz (X: N x T x F)", {
            "dataset_id": DATASET_ID,
            "spec": {"layers": [{"type": "lstm", "units": 16, "return_sequences": True},
                                {"type": "gru", "units": 16}, _softmax_out()],
                     "optimizer": {"type": "adam", "learning_rate": 0.01}, "gradient_clip_norm": 5.0,
                     "epochs": 15}}),
    },
    "PredictionCreate": {
        "instances": _example("Feature rows in the model's feature order", {
            "instances": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]}),
        "records": _example("Rows by column name", {"records": [
            {"sepal length (cm)": 5.1, "sepal width (cm)": 3.5, "petal length (cm)": 1.4, "petal width (cm)": 0.2}]}),
        "dataset": _example("Every row of a stored dataset", {"dataset_id": DATASET_ID}),
    },
    "EvaluationCreate": {
        "dataset": _example("A held-out dataset with the model's features and target column",
                            {"dataset_id": DATASET_ID}),
        "instances": _example("Feature rows with their true labels", {
            "instances": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]], "targets": ["setosa", "virginica"]}),
    },
}

MULTIPART_EXAMPLES = {
    "csv": _example("A small CSV with a header row and string labels", {
        "file": "sepal length (cm),sepal width (cm),petal length (cm),petal width (cm),species\n"
                "5.1,3.5,1.4,0.2,setosa\n7.0,3.2,4.7,1.4,versicolor\n6.3,3.3,6.0,2.5,virginica\n",
        "name": "iris sample"}),
}
