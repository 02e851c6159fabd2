"""`bps dev` (what `make run` runs): migrate, print a development key and a curl example, then
run the API and one worker as child processes in the foreground until Ctrl-C."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from bps.config import Settings

DEV_TENANT = "dev"
STOP_GRACE_S = 15.0


def dev_key(settings: Settings) -> str:
    """The key saved under var/ when it still authenticates, else a new one (saved, 0600)."""
    from bps.cli import create_key  # noqa: PLC0415
    from bps.db import session_scope  # noqa: PLC0415
    from bps.tenants import authenticate  # noqa: PLC0415

    path = Path(settings.var_dir) / "dev-api-key"
    if path.exists():
        key = path.read_text().strip()
        with session_scope(settings.database_url) as session:
            if authenticate(session=session, key=key):
                return key
    key = create_key(settings, DEV_TENANT)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text(key + "\n")
    return key


def banner(settings: Settings, key: str) -> str:
    base = f"http://{settings.host}:{settings.port}"
    auth = f'-H "Authorization: Bearer {key}"'
    return f"""
Backprop Service (embedded: {settings.database_url}, broker {settings.broker_url})
  API     {base}   docs {base}/docs
  API key {key}

Try it:
  curl -s {auth} -F file=@examples/iris.csv {base}/v1/datasets
  curl -s {auth} -H 'Content-Type: application/json' \\
       -d '{{"dataset_id": "<id>", "target": "species", "spec": {{"layers": [{{"type": "dense", "units": 16, "activation": "relu"}}, {{"type": "dense", "activation": "softmax"}}], "loss": "cross_entropy", "epochs": 20}}}}' \\
       {base}/v1/jobs
  curl -s {auth} {base}/v1/jobs/<job id>

Ctrl-C stops the API and the worker.
"""


def child_env(settings: Settings) -> dict[str, str]:
    env = dict(os.environ)
    env.update(DATABASE_URL=settings.database_url, BROKER_URL=settings.broker_url,
               HOST=settings.host, PORT=str(settings.port), BPS_VAR_DIR=settings.var_dir)
    env.setdefault("WEB_CONCURRENCY", "2")
    from bps.metrics import prepare_multiprocess_dir  # noqa: PLC0415  (the API's gunicorn workers share it)

    prepare_multiprocess_dir(settings, env)
    return env


def start_children(settings: Settings) -> dict[str, subprocess.Popen]:
    """The API and one worker, each in its own session: Ctrl-C reaches only this parent,
    which then stops them in order (a terminal's SIGINT would hit all at once)."""
    from bps.cli import gunicorn_argv  # noqa: PLC0415

    env = child_env(settings)
    worker_argv = [sys.executable, "-m", "bps.cli", "worker", "--queues", "cpu", "--concurrency", "1"]
    return {
        "api": subprocess.Popen(gunicorn_argv(settings, int(env["WEB_CONCURRENCY"])), env=env, start_new_session=True),
        "worker": subprocess.Popen(worker_argv, env=env, start_new_session=True),
    }


def stop_children(children: dict[str, subprocess.Popen]) -> None:
    """SIGTERM (gunicorn: graceful; the worker requeues its running job), then SIGKILL."""
    for process in children.values():
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S
    for process in children.values():
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def port_in_use(host: str, port: int) -> str | None:
    """Why the API could not listen on host:port (e.g. another process holds it), or None.
    Bound like gunicorn binds (SO_REUSEADDR), so a port in TIME_WAIT is free."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        with socket.create_server((host, port), family=family):
            return None
    except OSError as exc:
        return exc.strerror or str(exc)


def run_dev(settings: Settings) -> int:
    from bps.cli import migrate  # noqa: PLC0415

    problem = port_in_use(settings.host, settings.port)
    if problem:
        print(f"bps dev: cannot listen on {settings.host}:{settings.port} ({problem}). Another server is "
              f"probably running there: stop it, or choose another port with PORT (and HOST), "
              f"e.g. PORT={settings.port + 1} make run", file=sys.stderr)
        return 2
    os.makedirs(settings.var_dir, exist_ok=True)
    migrate(settings)
    print(banner(settings, dev_key(settings)), flush=True)
    stopping: list[int] = []

    def _request_stop(signum, _frame) -> None:  # noqa: ANN001
        stopping.append(signum)

    signal.signal(signal.SIGINT, _request_stop)
    signal.signal(signal.SIGTERM, _request_stop)
    children = start_children(settings)
    exit_code = 0
    try:
        while not stopping:
            exited = [(name, p.returncode) for name, p in children.items() if p.poll() is not None]
            if exited:
                name, exit_code = exited[0]
                print(f"bps dev: the {name} process exited with status {exit_code}; stopping", file=sys.stderr)
                exit_code = exit_code or 1
                break
            time.sleep(0.2)
    finally:
        stop_children(children)
    print("bps dev: stopped", flush=True)
    return exit_code
