"""The service benchmarks' processes: a throw-away SQLite database and API key (`setup`), real
`bps api` / `bps worker` processes (`start`, `stop`), and plain HTTP to them on 127.0.0.1."""
from __future__ import annotations

import http.client
import os
import socket
import subprocess
import sys
import time
from pathlib import Path


def setup(tmp: Path):  # noqa: ANN201
    from bps.config import load_settings
    from bps.db import make_engine, session_scope
    from bps.models import Base
    from bps.tenants import create_api_key

    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp}/bps.db", "BROKER_URL": f"sqla+sqlite:///{tmp}/broker.db",
           "BPS_VAR_DIR": str(tmp), "RATE_LIMIT_PER_MINUTE": "0", "JOB_HEARTBEAT_TIMEOUT_S": "60"}
    settings = load_settings(env)
    Base.metadata.create_all(make_engine(settings.database_url))
    with session_scope(settings.database_url) as session:
        key = create_api_key(session=session, tenant_name="bench")
    return settings, env, {"Authorization": f"Bearer {key}"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http_call(port: int, method: str, path: str, headers: dict, body: bytes | None = None) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request(method, path, body=body, headers={**headers, "Content-Type": "application/json"})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def http_call_multipart(port: int, headers: dict, raw: bytes) -> tuple[int, bytes]:
    boundary = "bpsbenchboundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.csv\"\r\n\r\n"
            .encode() + raw + f"\r\n--{boundary}--\r\n".encode())
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        connection.request("POST", "/v1/datasets", body=body,
                           headers={**headers, "Content-Type": f"multipart/form-data; boundary={boundary}"})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def start(args: list[str], env: dict, log: Path) -> subprocess.Popen:
    """`bps <args>` in a session of its own, its output to `log` (the child keeps the file open,
    this process closes its copy)."""
    with log.open("wb") as output:
        return subprocess.Popen([sys.executable, "-m", "bps.cli", *args], env=env, stdout=output,
                                stderr=subprocess.STDOUT, start_new_session=True)


def wait_http(port: int, deadline_s: float = 30.0) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        try:
            if http_call(port, "GET", "/healthz", {})[0] in (200, 503):
                return
        except OSError:
            pass
        time.sleep(0.2)  # also after another status: no busy loop against the starting API
    raise RuntimeError(f"the API did not start on port {port}")


def redis_url() -> str | None:
    import redis

    url = os.environ.get("BPS_BENCH_REDIS_URL", "redis://127.0.0.1:6379/15")
    try:
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
        return url
    except Exception:  # noqa: BLE001
        return None


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
