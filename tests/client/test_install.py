"""`pip install ./client` alone, in a fresh virtual environment: bps_client imports and `bpsc`
runs without the server's dependencies (Flask, Celery, SQLAlchemy, Numba, NumPy) installed."""
from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from tests.client.conftest import ROOT

pytestmark = pytest.mark.slow
PROBE = """
import importlib.util, sys
import bps_client
from bps_client import ApiError, Client, JobFailed, torch_module
absent = [m for m in ("flask", "celery", "sqlalchemy", "numba", "numpy", "pandas") if importlib.util.find_spec(m)]
print("installed:", absent)
print("imported:", sorted(m for m in sys.modules if m in ("numpy", "pandas", "torch")))
"""


def test_the_client_installs_and_runs_without_the_servers_dependencies(tmp_path):
    source = tmp_path / "client"
    shutil.copytree(ROOT / "client", source, ignore=shutil.ignore_patterns("*.egg-info", "build", "__pycache__"))
    venv = tmp_path / "venv"
    # Without pip of its own (ensurepip took 7 s): this pip installs into it through --python,
    # the same files a pip inside it would install.
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", str(source)],
                   check=True, timeout=240)
    probe = subprocess.run([str(python), "-c", PROBE], capture_output=True, text=True, check=True).stdout
    assert "installed: []" in probe and "imported: []" in probe, probe
    usage = subprocess.run([str(venv / "bin" / "bpsc"), "--help"], capture_output=True, text=True, check=True)
    assert "upload" in usage.stdout and "predict" in usage.stdout
    refused = subprocess.run([str(venv / "bin" / "bpsc"), "--url", "http://127.0.0.1:9", "jobs"],
                             capture_output=True, text=True)
    assert refused.returncode == 2 and "bpsc:" in refused.stderr
