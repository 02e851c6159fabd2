"""`bpsc` commands for what came after training: asynchronous predictions of stored datasets
(a progress bar, then the rows downloaded), prediction lists, evaluations and deletes."""
from __future__ import annotations

import argparse
import sys
from typing import Any

from bps_client.cli_base import command, out, out_items
from bps_client.client import Client

DELETES = {"dataset": Client.delete_dataset, "job": Client.delete_job, "model": Client.delete_model,
           "prediction": Client.delete_prediction}


def add_async_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--async", dest="async_dataset", metavar="DATASET_ID",
                        help="predict every row of this stored dataset on the workers")
    parser.add_argument("--format", choices=("csv", "parquet"), help="--async: the rows' format "
                        "(default: the -o file's suffix, else csv)")
    parser.add_argument("--no-wait", action="store_true", help="--async: print the prediction's id and return")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _summary(p: dict) -> str:
    return f"{p['id']} {p['status']} {p['n']} rows model {p['model_id']} {p.get('created_at', '')}"


def _wait_and_download(c: Client, args: argparse.Namespace, prediction_id: str) -> None:
    """Waits (a bar of rows on stderr), then streams the rows to -o; the path is the last line."""
    final = c.wait_prediction(prediction_id, progress=not args.no_progress)
    path = c.download_prediction(final["id"], args.output, format=args.format)
    out(args, {**final, "path": str(path)}, [f"prediction {final['id']} succeeded: {final['n']} rows", str(path)])


def predict_async(c: Client, args: argparse.Namespace) -> None:
    """`bpsc predict MODEL --async DATASET_ID` (its arguments checked by cli.cmd_predict)."""
    prediction = c.predict_async(args.model_id, args.async_dataset)
    if args.no_wait:
        out(args, prediction, [f"prediction {prediction['id']} {prediction['status']}: {prediction['n']} rows",
                               prediction["id"]])
        return
    print(f"prediction {prediction['id']} {prediction['status']}: {prediction['n']} rows", file=sys.stderr)
    _wait_and_download(c, args, prediction["id"])


def cmd_predictions(c: Client, args: argparse.Namespace) -> None:
    out_items(args, c.iter_predictions(model_id=args.model), _summary)


def cmd_prediction(c: Client, args: argparse.Namespace) -> None:
    if args.output:  # wait_prediction's first GET is the one needed
        _wait_and_download(c, args, args.prediction_id)
        return
    prediction = c.prediction(args.prediction_id)
    extra = [f"error: {prediction['error']}"] if prediction.get("error") else []
    out(args, prediction, [f"{_summary(prediction)} progress {prediction.get('progress', 0):.0%}", *extra,
                           prediction["id"]])


def _metric_lines(evaluation: dict) -> list[str]:
    names = ("accuracy", "r2", "mae", "rmse")
    metrics = " ".join(f"{k}={evaluation[k]:.4g}" for k in names if evaluation.get(k) is not None)
    lines = [f"{evaluation['n']} rows: {evaluation['loss_name']}={evaluation['loss']:.4g} {metrics}".rstrip()]
    matrix = evaluation.get("confusion_matrix")
    if matrix:
        labels = [str(label) for label in matrix["labels"]]
        width = max(len(label) for label in [*labels, "true/predicted"])
        lines.append(" ".join(["true/predicted".ljust(width), *(label.rjust(width) for label in labels)]))
        lines += [" ".join([label.ljust(width), *(str(v).rjust(width) for v in row)])
                  for label, row in zip(labels, matrix["matrix"], strict=True)]
    return lines


def cmd_evaluate(c: Client, args: argparse.Namespace) -> None:
    evaluation = c.evaluate(args.model_id, dataset_id=args.dataset_id)
    out(args, evaluation, _metric_lines(evaluation))


def cmd_delete(c: Client, args: argparse.Namespace) -> None:
    for resource_id in args.ids:
        DELETES[args.kind](c, resource_id)
        if not args.json:
            print(f"deleted {args.kind} {resource_id}")
    if args.json:
        out(args, {"deleted": args.kind, "ids": args.ids}, [])


def add_commands(commands: Any) -> None:
    p = command(commands, "predictions", cmd_predictions, "list your predictions, newest first (no rows)",
                "bpsc predictions --model $MODEL")
    p.add_argument("--model", help="only this model's")
    p = command(commands, "prediction", cmd_prediction, "show a prediction (status, progress, error); with -o, "
                "wait for it and download its rows", "bpsc prediction $PREDICTION -o rows.parquet")
    p.add_argument("prediction_id")
    p.add_argument("-o", "--output", help="download the rows to this file (once it has succeeded)")
    p.add_argument("--format", choices=("csv", "parquet"), help="default: the -o file's suffix, else csv")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p = command(commands, "evaluate", cmd_evaluate, "score a model on a held-out dataset with its target column "
                "(loss; accuracy and confusion matrix, or r2, mae, rmse)", "bpsc evaluate $MODEL $HELD_OUT_DS")
    p.add_argument("model_id")
    p.add_argument("dataset_id")
    p = command(commands, "delete", cmd_delete, "delete datasets, jobs, models or predictions (409 while "
                "something still needs them)", "bpsc delete model $MODEL")
    p.add_argument("kind", choices=tuple(DELETES))
    p.add_argument("ids", nargs="+", metavar="ID")
