"""`bpsc`: the Backprop Service on the command line (CONTRACT §5).

Ids are printed as the last line of stdout (so `ID=$(bpsc upload f.csv | tail -1)` works);
`--json` prints the resource instead. Exit status: 0 success, 1 a job failed or was cancelled
or an asynchronous prediction failed, 2 a usage or HTTP error (the problem's detail on
stderr). BPS_URL and BPS_API_KEY configure the server and key; on the default URL without a
key, the key `make run` wrote is used."""
from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from typing import Any

import httpx

from bps_client import cli_resources
from bps_client.cli_base import command as _command
from bps_client.cli_base import out as _out
from bps_client.cli_base import out_items
from bps_client.client import DEFAULT_CHUNK_ROWS, MODEL_SUFFIXES, ROWS_SUFFIXES, Client
from bps_client.downloads import pick_format
from bps_client.errors import ApiError, Unsuccessful

EXAMPLES = """examples:
  export BPS_URL=http://127.0.0.1:8000 BPS_API_KEY=bps_...
  DS=$(bpsc upload examples/iris.csv | tail -1)
  MODEL=$(bpsc train $DS --spec spec.json --target species --wait | tail -1)
  bpsc epochs $(bpsc jobs | head -1 | cut -d' ' -f1) --csv > epochs.csv
  bpsc predict $MODEL examples/iris.csv -o predictions.csv
  bpsc download $MODEL --format onnx -o iris.onnx
  bpsc predict $MODEL --async $DS -o predictions.parquet
  bpsc evaluate $MODEL $HELD_OUT_DS
  bpsc delete model $MODEL
"""


def _job_line(job: dict) -> str:
    return f"{job['id']} {job['status']} epoch {job.get('epoch', 0)}/{job.get('epochs', 0)} {job.get('created_at', '')}"


def _finished(args: argparse.Namespace, job: dict) -> None:
    metrics = job.get("metrics") or {}
    summary = " ".join(f"{k}={v:.4g}" for k, v in metrics.items() if isinstance(v, (int, float)))
    _out(args, job, [f"job {job['id']} {job['status']} {summary}".rstrip(), job["model_id"] or job["id"]])


def cmd_upload(c: Client, args: argparse.Namespace) -> None:
    ds = c.upload(args.file, name=args.name)
    _out(args, ds, [f"dataset {ds['name']}: {ds['n_rows']} rows, {len(ds.get('columns') or [])} columns", ds["id"]])


def cmd_datasets(c: Client, args: argparse.Namespace) -> None:
    out_items(args, c.iter_datasets(), lambda d: f"{d['id']} {d['name']} {d['n_rows']} rows")


def _int_list(text: str) -> list[int]:
    """argparse type of --input-shape: '1,8,8' -> [1, 8, 8]."""
    try:
        return [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers, e.g. 1,8,8") from None


def cmd_train(c: Client, args: argparse.Namespace) -> None:
    with open(args.spec) if args.spec != "-" else sys.stdin as handle:
        spec = json.load(handle)
    job = c.submit(args.dataset_id, spec, target=args.target, impute=args.impute,
                   features=args.features.split(",") if args.features else None,
                   input_shape=args.input_shape)
    if not args.wait:
        _out(args, job, [f"job {job['id']} {job['status']}", job["id"]])
        return
    print(f"job {job['id']} {job['status']}", file=sys.stderr)
    _finished(args, c.wait(job["id"], progress=not args.no_progress))


def cmd_watch(c: Client, args: argparse.Namespace) -> None:
    _finished(args, c.wait(args.job_id, progress=not args.no_progress))


def cmd_jobs(c: Client, args: argparse.Namespace) -> None:
    out_items(args, c.iter_jobs(status=args.status), _job_line)


def cmd_job(c: Client, args: argparse.Namespace) -> None:
    job = c.job(args.job_id)
    extra = [f"error: {job['error']}"] if job.get("error") else []
    _out(args, job, [_job_line(job), *extra, f"model: {job.get('model_id')}", job["id"]])


def cmd_epochs(c: Client, args: argparse.Namespace) -> None:
    epochs = c.epochs(args.job_id)
    columns = ["epoch", "loss", "val_loss", "accuracy", "val_accuracy", "learning_rate", "duration_s"]
    if args.json or not args.csv:
        _out(args, epochs, [" ".join(f"{k}={e.get(k)}" for k in columns) for e in epochs])
        return
    writer = csv.writer(sys.stdout)
    writer.writerow(columns)
    writer.writerows([[e.get(k) for k in columns] for e in epochs])


def cmd_cancel(c: Client, args: argparse.Namespace) -> None:
    job = c.cancel(args.job_id)
    state = "cancel requested" if job["status"] == "running" else job["status"]
    _out(args, job, [f"job {job['id']} {state}", job["id"]])


def cmd_models(c: Client, args: argparse.Namespace) -> None:
    out_items(args, c.iter_models(), lambda m: f"{m['id']} {m['task']} job {m['job_id']}")


def _check_predict_arguments(args: argparse.Namespace) -> None:
    """Every usage error of `bpsc predict`, before any request: a FILE or --async DATASET_ID, and
    a file's rows only as CSV."""
    if (args.file is None) == (args.async_dataset is None):
        raise ValueError("give a FILE to predict, or --async DATASET_ID (not both)")
    rows_format = pick_format(args.output, args.format, ROWS_SUFFIXES, "csv")
    if args.file is not None and (args.no_wait or rows_format != "csv"):
        raise ValueError("a file's predictions are written as CSV: --format parquet, a Parquet -o and --no-wait "
                         "go with --async DATASET_ID")


def cmd_predict(c: Client, args: argparse.Namespace) -> None:
    from bps_client.predict_file import predict_file  # noqa: PLC0415

    _check_predict_arguments(args)
    if args.async_dataset is not None:
        cli_resources.predict_async(c, args)
        return
    if args.output:
        with open(args.output, "w", newline="") as out:
            result = predict_file(c, args.model_id, args.file, out, args.chunk_rows)
        _out(args, result, [f"{result['n']} rows predicted in {len(result['prediction_ids'])} request(s)",
                            args.output])
    else:
        result = predict_file(c, args.model_id, args.file, sys.stdout, args.chunk_rows)
        print(f"{result['n']} rows predicted", file=sys.stderr)


def cmd_download(c: Client, args: argparse.Namespace) -> None:
    fmt = pick_format(args.output, args.format, MODEL_SUFFIXES, "npz")
    path = c.download(args.model_id, args.output, format=fmt)
    _out(args, {"model_id": args.model_id, "format": fmt, "path": str(path)}, [str(path)])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bpsc", description=__doc__, epilog=EXAMPLES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="the service (default: $BPS_URL or http://127.0.0.1:8000)")
    parser.add_argument("--api-key", help="the API key (default: $BPS_API_KEY, or the `make run` key)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_job_commands(commands)
    _add_model_commands(commands)
    cli_resources.add_commands(commands)
    return parser


def _add_job_commands(commands: Any) -> None:
    p = _command(commands, "upload", cmd_upload, "upload a dataset (CSV, Parquet or .npz); prints its id",
                 "bpsc upload examples/iris.csv --name iris")
    p.add_argument("file")
    p.add_argument("--name")
    _command(commands, "datasets", cmd_datasets, "list your datasets", "bpsc datasets")
    p = _command(commands, "train", cmd_train, "submit a training job; prints the job id (with --wait: watches "
                 "it and prints the model id)", "bpsc train $DS --spec spec.json --target species --wait")
    p.add_argument("dataset_id")
    p.add_argument("--spec", required=True, help="the network spec, a JSON file ('-': stdin)")
    p.add_argument("--target", help="the label column (CSV/Parquet)")
    p.add_argument("--features", help="input columns, comma-separated (default: every other column)")
    p.add_argument("--input-shape", type=_int_list, help="per-sample shape, e.g. 1,8,8")
    p.add_argument("--impute", choices=("mean", "median", "zero"), help="fill missing values")
    p.add_argument("--wait", action="store_true", help="watch the job until it ends (exit 1 if it fails)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p = _command(commands, "watch", cmd_watch, "a live progress bar until the job ends; prints the model id "
                 "(exit 1 if the job failed or was cancelled)", "bpsc watch $JOB")
    p.add_argument("job_id")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p = _command(commands, "jobs", cmd_jobs, "list your jobs, newest first", "bpsc jobs --status running")
    p.add_argument("--status", choices=("queued", "running", "succeeded", "failed", "cancelled"))
    for name, func, text in (("job", cmd_job, "show a job"), ("cancel", cmd_cancel, "cancel a job")):
        _command(commands, name, func, text, f"bpsc {name} $JOB").add_argument("job_id")
    p = _command(commands, "epochs", cmd_epochs, "a job's epochs (loss, val_loss, accuracy, ...)",
                 "bpsc epochs $JOB --csv > epochs.csv")
    p.add_argument("job_id")
    p.add_argument("--csv", action="store_true", help="CSV with a header row")


def _add_model_commands(commands: Any) -> None:
    _command(commands, "models", cmd_models, "list your models", "bpsc models")
    p = _command(commands, "predict", cmd_predict, "predict every row of a CSV/Parquet file (any size: sent in "
                 "pieces under the server's MAX_PREDICTION_ROWS); CSV out: the id column if any, prediction, "
                 "probability_<label> per class. --async DATASET_ID: every row of a stored dataset, predicted "
                 "by the workers (a progress bar, then the rows downloaded to -o)",
                 "bpsc predict $MODEL examples/iris.csv -o predictions.csv\n  bpsc predict $MODEL --async $DS "
                 "-o predictions.parquet")
    p.add_argument("model_id")
    p.add_argument("file", nargs="?", help="a CSV or Parquet file (or --async DATASET_ID)")
    p.add_argument("-o", "--output", help="the file to write (default: stdout; --async: prediction-<id>.<format>)")
    p.add_argument("--chunk-rows", type=int, default=DEFAULT_CHUNK_ROWS, help="rows per request (default %(default)s)")
    cli_resources.add_async_options(p)
    p = _command(commands, "download", cmd_download, "download a model; prints the file's path",
                 "bpsc download $MODEL --format onnx -o model.onnx")
    p.add_argument("model_id")
    p.add_argument("--format", choices=("npz", "onnx"), help="default: the -o file's suffix, else npz")
    p.add_argument("-o", "--output", help="the file (default: model-<id>.<format>)")


def _problem_text(error: ApiError) -> str:
    lines = [f"bpsc: {error} (HTTP {error.status})"]
    lines += [f"  {'.'.join(map(str, e.get('loc') or []))}: {e.get('msg')}" for e in error.errors
              if e.get("msg") != error.problem.get("detail")]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with Client(args.url, args.api_key) as client:
            args.func(client, args)
    except Unsuccessful as failed:
        if getattr(args, "json", False):
            print(json.dumps(failed.resource, indent=2))
        print(f"bpsc: {failed}", file=sys.stderr)
        return 1
    except ApiError as error:
        print(_problem_text(error), file=sys.stderr)
        return 2
    except BrokenPipeError:  # `bpsc jobs | head -1`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (httpx.HTTPError, OSError, ValueError, RuntimeError) as error:
        print(f"bpsc: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
