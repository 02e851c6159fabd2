"""`bpsc` against real `bps api` + `bps worker` processes: every command, --json, ids on the
last stdout line, exit statuses 0/1/2, the progress bar on stderr, chunked file predictions."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import httpx
import pandas as pd
import pytest

from bps_client.cli import main
from tests.client.conftest import IRIS, MAX_PREDICTION_ROWS, SPEC, mock_client

pytestmark = pytest.mark.slow
BPSC = Path(sys.executable).with_name("bpsc")


@pytest.fixture(scope="module")
def spec_file(tmp_path_factory) -> str:  # noqa: ANN001
    path = tmp_path_factory.mktemp("spec") / "spec.json"
    path.write_text(json.dumps(SPEC))
    return str(path)


def test_help_of_every_command_has_text_and_an_example():
    out = subprocess.run([str(BPSC), "--help"], capture_output=True, text=True, check=True).stdout
    commands = ["upload", "datasets", "train", "watch", "jobs", "job", "epochs", "cancel", "models", "predict",
                "download", "predictions", "prediction", "evaluate", "delete"]
    for command in commands:
        assert command in out
        help_text = subprocess.run([str(BPSC), command, "--help"], capture_output=True, text=True, check=True).stdout
        assert "--json" in help_text and f"bpsc {command}" in help_text.split("example:")[1], command


def test_upload_train_wait_epochs_job_jobs_models_download(bpsc, spec_file, tmp_path):
    status, out, _ = bpsc("upload", str(IRIS), "--name", "iris")
    assert status == 0 and "150 rows" in out[0]
    dataset_id = out[-1]
    status, out, err = bpsc("train", dataset_id, "--spec", spec_file, "--target", "species", "--wait")
    assert status == 0, err
    model_id = out[-1]
    job_id = out[0].split()[1]
    assert "succeeded" in out[0]
    assert f"epoch {SPEC['epochs']}/{SPEC['epochs']}" in err, "the progress bar is on stderr"
    status, out, _ = bpsc("job", job_id)
    assert status == 0 and out[-1] == job_id and f"model: {model_id}" in out
    status, out, _ = bpsc("job", job_id, "--json")
    assert json.loads("\n".join(out))["model_id"] == model_id
    status, out, _ = bpsc("jobs", "--status", "succeeded")
    assert any(line.startswith(job_id) for line in out)
    status, out, _ = bpsc("epochs", job_id, "--csv")
    rows = list(csv.DictReader(out))
    assert [int(r["epoch"]) for r in rows] == list(range(1, SPEC["epochs"] + 1)) and rows[0]["val_loss"]
    status, out, _ = bpsc("datasets", "--json")
    assert dataset_id in {d["id"] for d in json.loads("\n".join(out))}
    status, out, _ = bpsc("download", model_id, "-o", str(tmp_path / "m.npz"))
    assert status == 0 and out[-1] == str(tmp_path / "m.npz") and (tmp_path / "m.npz").stat().st_size > 0
    status, out, _ = bpsc("models")
    assert status == 0 and any(line.startswith(model_id) for line in out)


def test_train_without_wait_then_watch_and_cancel(bpsc, spec_file, trained):
    status, out, _ = bpsc("train", trained["dataset_id"], "--spec", spec_file, "--target", "species", "--json")
    job = json.loads("\n".join(out))
    assert status == 0 and job["status"] == "queued"
    status, out, err = bpsc("watch", job["id"])
    assert status == 0 and "succeeded" in out[0]
    _, job_out, _ = bpsc("job", job["id"], "--json")
    assert out[-1] == json.loads("\n".join(job_out))["model_id"], "the model id is the last line"
    for n in range(1, SPEC["epochs"] + 1):
        assert f"epoch {n}/{SPEC['epochs']}" in err
    status, _, err = bpsc("cancel", job["id"])
    assert status == 2 and "409" in err and "already finished" in err


def test_a_failed_job_exits_1_with_its_error(bpsc, tmp_path, trained):
    spec = tmp_path / "diverge.json"
    spec.write_text(json.dumps({**SPEC, "optimizer": {"type": "sgd", "learning_rate": 1e12}, "epochs": 20}))
    status, out, err = bpsc("train", trained["dataset_id"], "--spec", str(spec), "--target", "species", "--wait",
                            "--no-progress")
    assert status == 1 and "failed" in err and "NaN" in err


def test_http_and_usage_errors_exit_2_with_the_problem_on_stderr(bpsc, tmp_path, trained):
    status, out, err = bpsc("job", "no-such-job")
    assert status == 2 and out == [] and "Not Found" in err and "no-such-job" in err
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**SPEC, "layers": [{"type": "sparkle"}]}))
    status, _, err = bpsc("train", trained["dataset_id"], "--spec", str(bad), "--target", "species")
    assert status == 2 and "422" in err and "layers" in err
    status, _, err = bpsc("train", trained["dataset_id"])  # --spec missing
    assert status == 2 and "--spec" in err
    status, _, err = bpsc("upload", str(tmp_path / "missing.csv"))
    assert status == 2 and "missing.csv" in err


def test_predict_a_file_larger_than_max_prediction_rows_in_chunks(bpsc, trained, tmp_path):
    frame = pd.read_csv(IRIS)
    frame.insert(0, "id", [f"row-{i}" for i in range(len(frame))])
    source = tmp_path / "iris-with-ids.parquet"
    frame.to_parquet(source)
    out_path = tmp_path / "predictions.csv"
    status, out, err = bpsc("predict", trained["model_id"], str(source), "-o", str(out_path), "--chunk-rows", "50")
    assert status == 0, err
    assert out[-1] == str(out_path)
    n_requests = int(out[0].split(" in ")[1].split()[0])
    assert n_requests == -(-len(frame) // MAX_PREDICTION_ROWS), "pieces shrank to the server's limit"
    result = pd.read_csv(out_path)
    assert list(result.columns) == ["id", "prediction", "probability_setosa", "probability_versicolor",
                                    "probability_virginica"]
    assert result["id"].tolist() == frame["id"].tolist()
    assert (result["prediction"] == frame["species"]).mean() > 0.8
    assert result.filter(like="probability_").sum(axis=1).round(6).eq(1.0).all()


def test_predict_csv_to_stdout(bpsc, trained):
    status, out, err = bpsc("predict", trained["model_id"], str(IRIS))
    rows = list(csv.DictReader(out))
    assert status == 0 and len(rows) == 150 and "150 rows predicted" in err
    assert set(rows[0]) == {"prediction", "probability_setosa", "probability_versicolor", "probability_virginica"}


def test_a_refused_row_is_located_in_the_file_not_only_in_its_request(bpsc, trained, tmp_path):
    """The server names the row within the request; bpsc adds where that request starts in the file."""
    frame = pd.concat([pd.read_csv(IRIS).drop(columns="species")] * 3, ignore_index=True)
    frame.loc[2 * MAX_PREDICTION_ROWS + 3, "sepal width (cm)"] = float("nan")
    source = tmp_path / "gap.csv"
    frame.to_csv(source, index=False)
    status, out, err = bpsc("predict", trained["model_id"], str(source), "-o", str(tmp_path / "out.csv"))
    assert status == 2 and out == [], err
    assert "first at row 3" in err and f"from row {2 * MAX_PREDICTION_ROWS} of {source}" in err


def test_a_malformed_input_shape_is_a_usage_error_naming_it(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["train", "some-dataset", "--spec", "spec.json", "--input-shape", "1,x"])
    assert exit_.value.code == 2
    assert "'1,x' is not a comma-separated list of integers" in capsys.readouterr().err


@pytest.mark.parametrize(("arguments", "message"), [
    ([], "give a FILE to predict, or --async DATASET_ID"),
    ([str(IRIS), "--async", "some-dataset"], "not both"),
    ([str(IRIS), "--format", "parquet"], "a file's predictions are written as CSV"),  # a file's rows: CSV only
    ([str(IRIS), "-o", "rows.parquet"], "a file's predictions are written as CSV"),
    ([str(IRIS), "--no-wait"], "a file's predictions are written as CSV"),
])
def test_predicts_usage_errors_exit_2_before_any_request(arguments, message, capsys, monkeypatch):
    requests: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        requests.append(f"{request.method} {request.url.path}")
        return httpx.Response(500, json={"title": "unexpected"})

    monkeypatch.setattr("bps_client.cli.Client", lambda *_args: mock_client(handler, retries=0))
    assert main(["predict", "some-model", *arguments]) == 2
    out, err = capsys.readouterr()
    assert out == "" and message in err and "--async DATASET_ID" in err
    assert requests == []
