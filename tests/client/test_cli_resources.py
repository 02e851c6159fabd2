"""`bpsc` for what came after training, against real `bps api` + `bps worker` processes:
`predict --async` (a progress bar, then the rows), `predictions`, `prediction -o`, `evaluate`,
`delete`, `download --format onnx`; exit 1 for a failed prediction, 2 for HTTP and usage errors."""
from __future__ import annotations

import json

import onnx
import pandas as pd
import pytest

from tests.client.conftest import IRIS, MAX_PREDICTION_ROWS
from tests.client.test_resources import assert_rows_equal, synchronous_rows

pytestmark = pytest.mark.slow


def test_predict_async_draws_a_bar_then_downloads_every_row(bpsc, client, trained, tmp_path):
    target = tmp_path / "rows.csv"
    status, out, err = bpsc("predict", trained["model_id"], "--async", trained["dataset_id"], "-o", str(target))
    assert status == 0, err
    assert out[-1] == str(target) and "150 rows" in out[0] and "150/150" in err
    expected = synchronous_rows(client, trained["model_id"], pd.read_csv(IRIS).drop(columns="species"))
    assert_rows_equal(pd.read_csv(target), expected)

    status, out, _ = bpsc("predict", trained["model_id"], "--async", trained["dataset_id"], "--no-wait", "--json")
    queued = json.loads("\n".join(out))
    assert status == 0 and queued["n"] == 150
    parquet = tmp_path / "rows.parquet"
    status, out, err = bpsc("prediction", queued["id"], "-o", str(parquet), "--no-progress")
    assert status == 0 and out[-1] == str(parquet), err
    assert_rows_equal(pd.read_parquet(parquet), expected)
    status, out, _ = bpsc("predictions", "--model", trained["model_id"])
    assert status == 0 and any(line.startswith(f"{queued['id']} succeeded 150 rows") for line in out)
    status, out, _ = bpsc("prediction", queued["id"])
    assert status == 0 and out[-1] == queued["id"] and "progress 100%" in out[0]


def test_a_failed_async_prediction_exits_1_with_the_servers_reason(bpsc, client, trained, tmp_path):
    broken = pd.read_csv(IRIS).drop(columns="species")
    broken.loc[5, "petal length (cm)"] = 1e39
    dataset = client.upload(broken)
    status, out, err = bpsc("predict", trained["model_id"], "--async", dataset["id"], "-o", str(tmp_path / "x.csv"))
    assert status == 1 and "failed" in err and "row 5" in err
    assert not (tmp_path / "x.csv").exists()


def test_evaluate_prints_the_metrics_and_the_confusion_matrix(bpsc, client, trained):
    held_out = client.upload(pd.read_csv(IRIS).sample(MAX_PREDICTION_ROWS, random_state=0))
    status, out, _ = bpsc("evaluate", trained["model_id"], held_out["id"], "--json")
    evaluation = json.loads("\n".join(out))
    assert status == 0 and evaluation == client.evaluate(trained["model_id"], dataset_id=held_out["id"])
    status, out, _ = bpsc("evaluate", trained["model_id"], held_out["id"])
    assert status == 0 and out[0].startswith(f"{MAX_PREDICTION_ROWS} rows: cross_entropy=")
    assert f"accuracy={evaluation['accuracy']:.4g}" in out[0]
    assert out[1].split() == ["true/predicted", "setosa", "versicolor", "virginica"]
    assert [[int(v) for v in line.split()[1:]] for line in out[2:]] == evaluation["confusion_matrix"]["matrix"]


def test_delete_then_404_and_usage_errors_exit_2(bpsc, client, trained):
    kept = client.predict(trained["model_id"], [[5.1, 3.5, 1.4, 0.2]])
    gone = [client.predict(trained["model_id"], [[5.1, 3.5, 1.4, 0.2]])["id"] for _ in range(2)]
    status, out, _ = bpsc("delete", "prediction", *gone)
    assert status == 0 and out == [f"deleted prediction {gone[0]}", f"deleted prediction {gone[1]}"]
    for prediction_id in gone:
        status, out, err = bpsc("prediction", prediction_id)
        assert status == 2 and out == [] and "Not Found" in err
    assert client.prediction(kept["id"])["id"] == kept["id"]
    status, _, err = bpsc("delete", "model", "no-such-model")
    assert status == 2 and "no-such-model" in err
    status, _, err = bpsc("delete", "table", "x")
    assert status == 2 and "invalid choice" in err


def test_download_onnx_by_flag_and_by_suffix(bpsc, trained, tmp_path):
    status, out, _ = bpsc("download", trained["model_id"], "--format", "onnx", "-o", str(tmp_path / "a.bin"))
    assert status == 0 and out[-1] == str(tmp_path / "a.bin")
    onnx.checker.check_model(onnx.load(str(tmp_path / "a.bin")), full_check=True)
    status, out, _ = bpsc("download", trained["model_id"], "-o", str(tmp_path / "b.onnx"), "--json")
    assert status == 0 and json.loads("\n".join(out))["format"] == "onnx"
    assert (tmp_path / "b.onnx").read_bytes() == (tmp_path / "a.bin").read_bytes()
