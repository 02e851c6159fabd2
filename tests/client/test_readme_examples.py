"""The README's "Python client" and "Command line" examples, run verbatim against real `bps api`
and `bps worker` processes, from a directory holding examples/ (BPS_URL and BPS_API_KEY point
at the test's service)."""
from __future__ import annotations

import csv
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import onnx
import pandas as pd
import pytest

from tests.client.conftest import ROOT

pytestmark = pytest.mark.slow


def readme_block(section: str, language: str, nth: int = 0) -> str:
    """The `nth` (from 0) ```language block after the heading `section`."""
    text = (ROOT / "README.md").read_text()
    body = text[text.index(f"## {section}\n"):]
    start = -1
    for _ in range(nth + 1):
        start = body.index(f"```{language}\n", start + 1) + len(f"```{language}\n")
    return body[start:body.index("```", start)]


@pytest.fixture
def checkout(service, tmp_path) -> tuple[Path, dict[str, str]]:  # noqa: ANN001
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    env = {**os.environ, "BPS_URL": service.url, "BPS_API_KEY": service.key,
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    return tmp_path, env


def test_python_client_example(checkout):
    cwd, env = checkout
    session = readme_block("Python client", "python") + readme_block("Python client", "python", 1)  # one session
    done = subprocess.run([sys.executable, "-c", session], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "val_accuracy" in out and "epoch 50/50" in done.stderr
    served = re.search(r"\] \[([0-9.e-]+), ", out)
    from_torch = re.search(r"tensor\(\[([0-9.e+-]+),", out)
    assert float(served[1]) == pytest.approx(float(from_torch[1]), rel=1e-3), out
    assert "Unprocessable Content" in out and "['spec', 'layers', 0, 'units']" in out
    assert (cwd / "iris.npz").exists()
    assert "150/150" in done.stderr and "\n150\n" in out and out.rstrip().endswith("404"), out
    assert re.search(r"\n[01](\.\d+)? \[\[\d, \d, \d\], ", out), out  # accuracy and the confusion matrix
    onnx.checker.check_model(onnx.load(str(cwd / "iris.onnx")))


def test_command_line_example(checkout):
    cwd, env = checkout
    done = subprocess.run(["bash", "-c", readme_block("Command line", "sh")], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)
    out = done.stdout.splitlines()
    assert out[-1] == "2", done.stdout + done.stderr[-3000:]
    assert "Not Found" in done.stderr and "epoch " in done.stderr
    with open(cwd / "predictions.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 178 and set(rows[0]) == {"prediction", "probability_class_0", "probability_class_1",
                                                 "probability_class_2"}
    assert (cwd / "epochs.csv").read_text().startswith("epoch,loss,val_loss")
    assert any(line.startswith("BpsModel(") for line in out) and (cwd / "wine.npz").exists()
    assert len(pd.read_parquet(cwd / "wine-predictions.parquet")) == 178 and "178/178" in done.stderr
    assert any(line.startswith("7 rows: cross_entropy=") for line in out) and "true/predicted" in done.stdout
    assert any(line.startswith("deleted prediction ") for line in out)
    onnx.checker.check_model(onnx.load(str(cwd / "wine.onnx")))
