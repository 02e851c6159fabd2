"""`bps dev` (make run) on a busy port: it says which variables to change and exits before it
migrates, creates a key or starts anything."""
from __future__ import annotations

import os
import socket
import subprocess
import sys

from bps.dev import port_in_use


def test_port_in_use_tells_a_listening_port_from_a_free_one() -> None:
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        assert port_in_use("127.0.0.1", port)
    assert port_in_use("127.0.0.1", port) is None, "free again once closed (SO_REUSEADDR as gunicorn)"


def test_bps_dev_on_a_busy_port_names_port_and_host_and_creates_nothing(tmp_path) -> None:  # noqa: ANN001
    var_dir = tmp_path / "var"
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        env = {**os.environ, "HOST": "127.0.0.1", "PORT": str(port), "BPS_VAR_DIR": str(var_dir),
               "DATABASE_URL": f"sqlite:///{var_dir}/bps.db", "BROKER_URL": f"sqla+sqlite:///{var_dir}/broker.db"}
        result = subprocess.run([sys.executable, "-m", "bps.cli", "dev"], env=env, cwd=tmp_path,
                                capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert f"127.0.0.1:{port}" in result.stderr and "PORT" in result.stderr and "HOST" in result.stderr
    assert "API key" not in result.stdout
    assert not var_dir.exists(), "no database, no key file: nothing was created"
