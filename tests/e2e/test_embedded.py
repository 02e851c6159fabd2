"""End to end on the embedded default, as `make run` starts it: `bps dev` (migrate, a dev key,
gunicorn + one Celery worker on SQLite and the serverless broker) as a real process."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import urllib.error
import urllib.request

import pytest

from tests.e2e.flow import Client, free_port, train_and_predict, wait_healthy
from tests.faults.harness import bps_command, stop_process_groups

pytestmark = pytest.mark.slow


@pytest.fixture
def dev_service(tmp_path):  # noqa: ANN001
    port = free_port()
    env = {key: value for key, value in os.environ.items() if key not in ("DATABASE_URL", "BROKER_URL")}
    env.update(BPS_VAR_DIR=str(tmp_path / "var"), HOST="127.0.0.1", PORT=str(port), WEB_CONCURRENCY="1",
               LOG_LEVEL="WARNING")
    log_path = tmp_path / "dev.log"
    with open(log_path, "wb") as log:
        # Its own process group: a failed test must not leave the API or the worker running.
        process = subprocess.Popen(bps_command("dev"), env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        try:
            yield process, f"http://127.0.0.1:{port}", tmp_path / "var", log_path
        finally:
            # `bps dev` runs the API and the worker in sessions of their own: only its own stop
            # (SIGTERM) ends them; the group's SIGKILL is for a parent that does not stop.
            stop_process_groups([process], grace_s=30)


def test_make_run_topology_trains_and_predicts_then_stops_on_ctrl_c(dev_service):
    process, base_url, var_dir, log_path = dev_service
    health = wait_healthy(Client(base_url), alive=lambda: process.poll() is None)
    assert health["status"] == "ok"
    key = (var_dir / "dev-api-key").read_text().strip()
    assert key in log_path.read_text(), "the development key is printed at start"
    assert (var_dir / "bps.db").exists()

    train_and_predict(Client(base_url, key))
    assert (var_dir / "broker.db").exists(), "the jobs went through the file broker under var/"

    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=30) == 0, log_path.read_text()[-3000:]
    with pytest.raises(urllib.error.URLError):  # the API is gone too
        Client(base_url).request("GET", "/healthz")


def test_a_6000_byte_request_line_reaches_the_app_and_gets_its_problem(dev_service):
    """gunicorn's default limit (4,094 bytes) would answer a plain-text 400 itself; `bps api`
    raises it to 8,190, so the app answers: here 400 problem+json naming the parameter."""
    process, base_url, var_dir, _ = dev_service
    wait_healthy(Client(base_url), alive=lambda: process.poll() is None)
    key = (var_dir / "dev-api-key").read_text().strip()
    request = urllib.request.Request(f"{base_url}/v1/jobs?status={'x' * 6000}",
                                     headers={"Authorization": f"Bearer {key}"})
    with pytest.raises(urllib.error.HTTPError) as answer:
        urllib.request.urlopen(request, timeout=30)
    assert answer.value.code == 400 and answer.value.headers["Content-Type"] == "application/problem+json"
    assert json.loads(answer.value.read())["errors"][0]["loc"] == ["query", "status"]
