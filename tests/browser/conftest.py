"""Real processes for the browser tests: `bps migrate`, `bps keys create`, `bps api` and one
`bps worker` on the embedded topology (SQLite file database, SQLite file broker), and Debian's
Chromium driven by Playwright. Skipped, with the reason, where Chromium or Playwright is missing.
Below the fixtures, the helpers of the web page's tests (jobs through the API, the page's views)."""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.flow import Client, free_port, wait_healthy
from tests.faults.harness import bps_command

CHROMIUM = Path(os.environ.get("BPS_TEST_CHROMIUM", "/usr/bin/chromium"))
ENV_DROPPED = ("DATABASE_URL", "BROKER_URL", "BPS_API_KEY")


@dataclass
class Service:
    base_url: str
    keys: dict[str, str]
    log_dir: Path
    processes: list[subprocess.Popen] = field(default_factory=list)

    def client(self, tenant: str = "alice") -> Client:
        return Client(self.base_url, self.keys[tenant])

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in sorted(self.log_dir.glob("*.log")))


def _env(tmp: Path, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ENV_DROPPED}
    env.update(DATABASE_URL=f"sqlite:///{tmp}/bps.db", BROKER_URL=f"sqla+sqlite:///{tmp}/broker.db",
               BPS_VAR_DIR=str(tmp / "var"), HOST="127.0.0.1", PORT=str(port), WEB_CONCURRENCY="1",
               GUNICORN_THREADS="8", LOG_LEVEL="WARNING", BPS_BLAS_THREADS="1", HEARTBEAT_INTERVAL_S="0.5")
    return env


def _start(command: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen:
    with open(log_path, "wb") as log:  # each in its own process group, killed whole at the end
        return subprocess.Popen(command, env=env, cwd=log_path.parent, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)


def _bps(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(bps_command(*args), env=env, capture_output=True, text=True)
    assert done.returncode == 0, f"bps {' '.join(args)} failed:\n{done.stdout}{done.stderr[-3000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    tmp = tmp_path_factory.mktemp("web")
    port = free_port()
    env = _env(tmp, port)
    _bps(env, "migrate")
    keys = {tenant: _bps(env, "keys", "create", tenant).strip().splitlines()[-1] for tenant in ("alice", "bob")}
    running = Service(f"http://127.0.0.1:{port}", keys, tmp)
    try:
        running.processes.append(_start(bps_command("api"), env, tmp / "api.log"))
        running.processes.append(_start(bps_command("worker", "--concurrency", "1"), env, tmp / "worker.log"))
        wait_healthy(Client(running.base_url), alive=lambda: all(p.poll() is None for p in running.processes))
        yield running
    finally:
        for process in running.processes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        for process in running.processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: apt-get install -y chromium (.ci/run installs it)")
    if not _playwright_available():
        pytest.skip("Playwright's Python package is missing: pip install -e '.[dev]'")
    from playwright.sync_api import sync_playwright  # noqa: PLC0415

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        yield chromium
        chromium.close()


def _playwright_available() -> bool:
    try:
        import playwright.sync_api  # noqa: F401, PLC0415
    except ImportError:
        return False
    return True


def _unexpected(message: Any, base_url: str) -> bool:
    """A console error other than Chromium's note on an API answer of 4xx that the page shows
    (a wrong key's 401, a spec's 422, a missing endpoint's 404 before the page falls back)."""
    url = (message.location or {}).get("url", "")
    handled = message.text.startswith("Failed to load resource") and url.startswith(base_url + "/v1/")
    return not handled


@pytest.fixture
def console_errors() -> list[str]:
    return []


@pytest.fixture
def page(browser: Any, service: Service, console_errors: list[str]) -> Iterator[Any]:
    """A fresh tab (its own sessionStorage) that records every console error and uncaught
    exception; the test fails if any was seen on any page it opened."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    tab = context.new_page()
    tab.on("console", lambda m: console_errors.append(f"{m.type}: {m.text} ({(m.location or {}).get('url')})")
           if m.type == "error" and _unexpected(m, service.base_url) else None)
    tab.on("pageerror", lambda e: console_errors.append(f"uncaught: {e}"))
    yield tab
    context.close()
    assert console_errors == [], "JavaScript console errors on the page"


# ---- the web page's tests: jobs through the API (tests.e2e.flow.Client), then the page's views
def upload(client: Client, filename: str, data: bytes, name: str | None = None) -> dict[str, Any]:
    status, dataset = client.upload(filename, data, name)
    assert status == 201, dataset
    return dataset


def submit(client: Client, dataset_id: str, target: str, spec: dict[str, Any]) -> str:
    status, job = client.json("POST", "/v1/jobs", {"dataset_id": dataset_id, "target": target, "spec": spec})
    assert status == 202, job
    return job["id"]


def wait_job(client: Client, job_id: str, until: Any, timeout: float = 120.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, job = client.json("GET", f"/v1/jobs/{job_id}")
        assert status == 200, job
        if until(job):
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not get there in {timeout} s: {job}")


def finished(client: Client, job_id: str) -> dict[str, Any]:
    job = wait_job(client, job_id, lambda j: j["status"] not in ("queued", "running"))
    assert job["status"] == "succeeded", job
    return job


def sign_in(page: Any, service: Service, tenant: str = "alice") -> None:
    page.goto(service.base_url + "/")
    page.fill("#api-key", service.keys[tenant])
    page.click("#sign-in button[type=submit]")
    page.wait_for_selector("#page[data-ready]")


def fresh_view(page: Any, action: Any) -> None:
    """Runs `action` (a click, a navigation) and waits until the view it opens has loaded."""
    page.evaluate("document.getElementById('page')?.setAttribute('data-stale', '1')")
    action()
    page.wait_for_selector("#page[data-ready]:not([data-stale])")


def open_view(page: Any, hash_path: str) -> None:
    fresh_view(page, lambda: page.evaluate("(h) => { location.hash = h; }", hash_path))
