"""The `bps` console script: each process of the service, and its administration.

    bps migrate                       alembic upgrade head on DATABASE_URL
    bps api                           the API under gunicorn on HOST:PORT
    bps worker [--queues cpu,gpu] [--concurrency N]
    bps keys create NAME              a new API key for tenant NAME (last line of stdout)
    bps dev                           `make run`: migrate, a dev key, API + one worker
"""
from __future__ import annotations

import argparse
import importlib
import os
import socket
import sys
from pathlib import Path

from bps.config import Settings, load_settings
from bps.openblas import choose_kernels

ROOT = Path(__file__).resolve().parent.parent


def alembic_ini() -> Path:
    """alembic.ini of the source tree (editable install), else of the working directory."""
    for candidate in (ROOT / "alembic.ini", Path.cwd() / "alembic.ini"):
        if candidate.exists():
            return candidate
    raise SystemExit("bps migrate: alembic.ini not found; run it from the project directory")


def migrate(settings: Settings) -> None:
    from alembic import command  # noqa: PLC0415
    from alembic.config import Config  # noqa: PLC0415

    from bps.db import _ensure_sqlite_dir  # noqa: PLC0415

    config = Config(str(alembic_ini()))
    config.set_main_option("sqlalchemy.url", settings.database_url.replace("%", "%%"))
    _ensure_sqlite_dir(settings.database_url)
    command.upgrade(config, "head")


def create_key(settings: Settings, tenant_name: str) -> str:
    from sqlalchemy.exc import OperationalError, ProgrammingError  # noqa: PLC0415

    from bps.db import session_scope  # noqa: PLC0415
    from bps.tenants import create_api_key  # noqa: PLC0415

    try:
        with session_scope(settings.database_url) as session:
            return create_api_key(session=session, tenant_name=tenant_name)
    except (OperationalError, ProgrammingError) as exc:
        raise SystemExit(f"bps: cannot create a key on {settings.database_url}: run `bps migrate` first ({exc.orig})")


def gunicorn_argv(settings: Settings, workers: int | None = None) -> list[str]:
    workers = workers or int(os.environ.get("WEB_CONCURRENCY", "2"))
    return [
        sys.executable, "-m", "gunicorn",
        "--bind", f"{settings.host}:{settings.port}",
        "--workers", str(workers),
        # Event streams (GET /v1/jobs/{id}/events) each hold a thread: MAX_EVENT_STREAMS more.
        "--threads", str(int(os.environ.get("GUNICORN_THREADS", "4")) + settings.max_event_streams),
        "--timeout", os.environ.get("GUNICORN_TIMEOUT", "120"),
        "--graceful-timeout", "10",
        "--config", "python:bps.gunicorn_config",
        "service.app:create_app()",
    ]


def run_api(settings: Settings) -> None:
    """Replace this process with gunicorn (signals then go straight to it)."""
    from bps.metrics import prepare_multiprocess_dir  # noqa: PLC0415

    prepare_multiprocess_dir(settings, os.environ)
    argv = gunicorn_argv(settings)
    os.execv(argv[0], argv)


def worker_pool(queues: list[str], concurrency: int) -> str:
    """GPU workers never fork after CUDA could be initialised: solo (or threads) there;
    CPU workers fork (prefork) when they run more than one job at a time."""
    if "gpu" in queues:
        return "solo" if concurrency == 1 else "threads"
    return "solo" if concurrency == 1 else "prefork"


def configure_worker_logging(settings: Settings, worker_name: str) -> None:
    """LOG_FORMAT lines from the worker and from Celery itself: with a receiver on Celery's
    setup_logging signal, Celery leaves the logging configuration alone."""
    from celery import signals  # noqa: PLC0415

    from bps.logs import configure_logging  # noqa: PLC0415

    configure_logging(settings.log_format, settings.log_level, worker=worker_name)
    signals.setup_logging.connect(lambda **_kwargs: None, weak=False)


def run_worker(settings: Settings, queues: list[str], concurrency: int, pool: str | None) -> None:
    from worker.celery_app import QUEUES, create_celery  # noqa: PLC0415
    from worker.registry import install_worker_signals  # noqa: PLC0415

    unknown = [q for q in queues if q not in QUEUES]
    if unknown or not queues:
        raise SystemExit(f"bps worker: --queues must name some of {', '.join(QUEUES)}, got {','.join(queues)!r}")
    name = f"bps-{'-'.join(queues)}-{os.getpid()}@{socket.gethostname()}"
    configure_worker_logging(settings, name)
    app = create_celery(settings)
    install_worker_signals(settings, queues)
    # The first job should not pay for importing the training path (~0.6 s) or compiling its kernels. These imports
    # initialise no CUDA (CuPy is imported only by a job that trains on the GPU), so they are
    # safe in the parent of a forking pool.
    for module in ("worker.runner", "worker.engine.network", "bps.preprocessing", "bps.datasets"):
        importlib.import_module(module)
    importlib.import_module("worker.engine.cpu_kernels").warm_up()  # Numba: compiled once, then cached on disk
    quiet = ["--quiet"] if settings.log_format == "json" else []  # no banner between the JSON lines
    app.worker_main([
        *quiet, "worker", "--queues", ",".join(queues), "--concurrency", str(concurrency),
        "--pool", pool or worker_pool(queues, concurrency), "--hostname", name,
        "--loglevel", settings.log_level, "--without-gossip", "--without-mingle",
    ])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bps", description="Backprop Service processes and administration")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("migrate", help="alembic upgrade head on DATABASE_URL")
    commands.add_parser("api", help="the API under gunicorn on HOST:PORT")
    worker = commands.add_parser("worker", help="one Celery training worker")
    worker.add_argument("--queues", default="cpu", help="comma-separated: cpu, gpu (default cpu)")
    worker.add_argument("--concurrency", type=int, default=1, help="jobs run at once (default 1)")
    worker.add_argument("--pool", choices=("solo", "threads", "prefork"), default=None,
                        help="Celery pool (default: solo for 1, prefork for CPU, threads for GPU)")
    keys = commands.add_parser("keys", help="API keys")
    key_commands = keys.add_subparsers(dest="keys_command", required=True)
    create = key_commands.add_parser("create", help="create tenant NAME (or a new key for it)")
    create.add_argument("name")
    commands.add_parser("dev", help="`make run`: migrate, a dev key, the API and one worker")
    return parser


def main(argv: list[str] | None = None) -> int:
    choose_kernels()  # before anything loads NumPy (and with it OpenBLAS); inherited by `bps dev`'s children
    args = build_parser().parse_args(argv)
    settings = load_settings()
    if args.command == "migrate":
        migrate(settings)
        print(f"database {settings.database_url} is at the latest schema")
    elif args.command == "api":
        run_api(settings)
    elif args.command == "worker":
        if args.concurrency < 1:
            raise SystemExit("bps worker: --concurrency must be at least 1")
        queues = [q.strip() for q in args.queues.split(",") if q.strip()]
        run_worker(settings, queues, args.concurrency, args.pool)
    elif args.command == "keys":
        key = create_key(settings, args.name)
        print(f"created an API key for tenant {args.name!r}; it is shown only once:")
        print(key)
    elif args.command == "dev":
        from bps.dev import run_dev  # noqa: PLC0415

        return run_dev(settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
