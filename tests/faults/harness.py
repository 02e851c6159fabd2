"""Helpers of the fault tests: real `bps worker` processes on PostgreSQL and Redis, jobs put
straight into the job table (the outbox) and published, and the checks every fault test makes:
the job is terminal and each of its epochs is recorded exactly once, in order."""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from bps.config import Settings
from bps.db import session_scope
from bps.models import TERMINAL_STATUSES, Epoch, Job
from tests.e2e.flow import free_port
from tests.worker.test_runner import add_job, blobs_csv, classifier_spec

BPS = Path(sys.executable).with_name("bps")
TERMINAL = TERMINAL_STATUSES
# Short enough that a takeover happens within seconds (the defaults are 60 s and 5 s).
FAST_RECOVERY_ENV = {"JOB_HEARTBEAT_TIMEOUT_S": "3", "HEARTBEAT_INTERVAL_S": "0.5", "REAPER_INTERVAL_S": "1",
                     "WORKER_HEARTBEAT_TIMEOUT_S": "3", "BPS_BLAS_THREADS": "1", "LOG_LEVEL": "WARNING"}


def bps_command(*args: str) -> list[str]:
    return ([str(BPS)] if BPS.exists() else [sys.executable, "-m", "bps.cli"]) + list(args)


class Workers:
    """Starts `bps worker` processes with the settings' database and broker; stops them all."""

    def __init__(self, settings: Settings, log_dir: Path) -> None:
        self.settings, self.log_dir, self.processes = settings, log_dir, []

    def start(self, concurrency: int = 1, **extra_env: str) -> subprocess.Popen:
        env = {**os.environ, "DATABASE_URL": self.settings.database_url, "BROKER_URL": self.settings.broker_url,
               "BPS_VAR_DIR": str(self.log_dir / "var"), **FAST_RECOVERY_ENV, **extra_env}
        log = open(self.log_dir / f"worker-{len(self.processes)}.log", "wb")  # noqa: SIM115
        process = subprocess.Popen(bps_command("worker", "--concurrency", str(concurrency)), env=env,
                                   stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self.processes.append(process)
        return process

    def stop_all(self) -> None:
        stop_processes(self.processes)

    def logs(self) -> str:
        return "\n".join(path.read_text(errors="replace")[-3000:] for path in sorted(self.log_dir.glob("worker-*.log")))


def stop_processes(processes: list[subprocess.Popen], grace_s: float = 15.0) -> None:
    """SIGTERM to each process still running, then SIGKILL to any still running after `grace_s`."""
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def stop_process_groups(processes: list[subprocess.Popen], grace_s: float = 15.0) -> None:
    """SIGTERM to each process's group (each started with start_new_session=True), then SIGKILL
    to any group still running after `grace_s`."""
    for process in processes:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def slow_job(settings: Settings, epochs: int = 20, **job_values: Any) -> str:
    """A job of `epochs` epochs of roughly 0.1-0.3 s each (2,100 rows, batches of 2)."""
    spec = classifier_spec(epochs=epochs, batch_size=2, validation_split=0.1,
                           layers=[{"type": "dense", "units": 32, "activation": "relu"},
                                   {"type": "dense", "activation": "softmax"}])
    return add_job(settings, spec, raw=blobs_csv(n_per_class=700), **job_values)


def long_epoch_job(settings: Settings, epochs: int = 3) -> str:
    """A job whose epochs take many seconds each (2,100 rows, batches of 2, two 1024-unit layers)."""
    spec = classifier_spec(epochs=epochs, batch_size=2, validation_split=0.1,
                           layers=[{"type": "dense", "units": 1024, "activation": "relu"},
                                   {"type": "dense", "units": 1024, "activation": "relu"},
                                   {"type": "dense", "activation": "softmax"}])
    return add_job(settings, spec, raw=blobs_csv(n_per_class=700))


def quick_job(settings: Settings, epochs: int = 2) -> str:
    return add_job(settings, classifier_spec(epochs=epochs))


def publish(settings: Settings, job_id: str) -> None:
    from worker.queue import publish_job  # noqa: PLC0415

    publish_job(settings, job_id, "cpu")


def job_of(settings: Settings, job_id: str) -> Job:
    with session_scope(settings.database_url) as session:
        return session.get(Job, job_id)


def epoch_rows(settings: Settings, job_id: str) -> list[tuple[int, int]]:
    """(epoch, attempt) of every Epoch row of the job, in epoch order."""
    with session_scope(settings.database_url) as session:
        return [tuple(r) for r in session.execute(
            select(Epoch.epoch, Epoch.attempt).where(Epoch.job_id == job_id).order_by(Epoch.epoch, Epoch.id))]


def duplicated_epoch_rows(settings: Settings) -> int:
    """Epoch rows beyond the first for any (job, epoch): must be 0."""
    with session_scope(settings.database_url) as session:
        counts = session.execute(select(func.count()).select_from(Epoch).group_by(Epoch.job_id, Epoch.epoch)).scalars()
        return sum(n - 1 for n in counts)


def wait_for(condition: Callable[[], Any], timeout: float, what: str, alive: Callable[[], bool] = lambda: True) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        assert alive(), f"a worker exited while waiting for {what}"
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def wait_terminal(settings: Settings, job_ids: list[str], timeout: float,
                  logs: Callable[[], str] = lambda: "") -> dict[str, str]:
    def statuses() -> dict[str, str] | None:
        with session_scope(settings.database_url) as session:
            rows = dict(session.execute(select(Job.id, Job.status).where(Job.id.in_(job_ids))).all())
        return rows if all(rows.get(j) in TERMINAL for j in job_ids) else None

    try:
        return wait_for(statuses, timeout, f"{len(job_ids)} job(s) to finish")
    except AssertionError:
        with session_scope(settings.database_url) as session:
            rows = session.execute(select(Job.id, Job.status, Job.attempt, Job.epoch).where(Job.id.in_(job_ids))).all()
        unfinished = [tuple(r) for r in rows if r[1] not in TERMINAL]
        raise AssertionError(f"not all terminal: {unfinished}\n{logs()}") from None


def assert_each_epoch_once(settings: Settings, job_id: str, epochs: int) -> list[tuple[int, int]]:
    rows = epoch_rows(settings, job_id)
    assert [e for e, _ in rows] == list(range(1, epochs + 1)), rows
    return rows


class PrivateRedis:
    """A `redis-server` of this test alone on a free port, without persistence: restarting it
    loses every message, as a Redis restart without AOF does."""

    def __init__(self, log_dir: Path) -> None:
        self.binary = shutil.which("redis-server")
        self.port, self.log_dir, self.process = free_port(), log_dir, None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.log_dir)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        import redis  # noqa: PLC0415

        client = redis.Redis(port=self.port, socket_connect_timeout=1)
        wait_for(lambda: _pings(client), 10, "redis-server to start")
        client.close()

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def _pings(client: Any) -> bool:
    try:
        return bool(client.ping())
    except Exception:  # noqa: BLE001
        return False
