"""The `bps` console script: each process of the service, and its administration.

    bps migrate                       alembic upgrade head on DATABASE_URL
    bps api                           the API under gunicorn on HOST:PORT
    bps worker [--queues cpu,gpu] [--concurrency N]
    bps keys create NAME              a new API key for tenant NAME (last line of stdout)
    bps keys list                     every key's tenant, id, prefix and dates (never the key)
    bps keys revoke KEY_ID_OR_PREFIX  the key answers 401 from then on
    bps dev                           `make run`: migrate, a dev key, API + one worker
"""
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from bps.config import Settings, load_settings
from bps.openblas import choose_kernels, park_idle_threads

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")


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

    from bps.logs import configure_logging  # noqa: PLC0415

    config = Config(str(alembic_ini()))
    config.set_main_option("sqlalchemy.url", settings.database_url.replace("%", "%%"))
    config.attributes["configure_logger"] = False  # alembic's lines in LOG_FORMAT, not alembic.ini's
    configure_logging(settings.log_format, settings.log_level)
    _ensure_sqlite_dir(settings.database_url)
    command.upgrade(config, "head")


def with_session(settings: Settings, action: Callable[[Session], T]) -> T:
    """`action(session)` in one transaction; a database without the schema exits saying what to do."""
    from sqlalchemy.exc import OperationalError, ProgrammingError  # noqa: PLC0415

    from bps.db import session_scope  # noqa: PLC0415

    try:
        with session_scope(settings.database_url) as session:
            return action(session)
    except (OperationalError, ProgrammingError) as exc:
        raise SystemExit(f"bps: cannot use the database {settings.database_url}: run `bps migrate` first ({exc.orig})")


def create_key(settings: Settings, tenant_name: str) -> str:
    from bps.tenants import create_api_key  # noqa: PLC0415

    return with_session(settings, lambda session: create_api_key(session=session, tenant_name=tenant_name))


def run_keys_command(settings: Settings, args: argparse.Namespace) -> None:
    from bps.problems import ProblemError  # noqa: PLC0415
    from bps.tenants import list_api_keys, revoke_api_key  # noqa: PLC0415

    if args.keys_command == "create":
        try:
            key = create_key(settings, args.name)
        except ValueError as exc:  # the tenant name
            raise SystemExit(f"bps keys create: {exc}") from None
        print(f"created an API key for tenant {args.name!r}; it is shown only once:")
        print(key)
    elif args.keys_command == "list":
        print(f"{'TENANT':<24} {'KEY ID':<36} {'PREFIX':<12} {'CREATED (UTC)':<20} REVOKED (UTC)")
        for row in with_session(settings, lambda session: list_api_keys(session=session)):
            print(f"{row.tenant:<24} {row.key_id:<36} {row.prefix:<12} {_when(row.created_at):<20} "
                  f"{_when(row.revoked_at) or '-'}")
    else:
        try:
            row = with_session(settings, lambda session: revoke_api_key(session=session, key=args.key))
        except ProblemError as exc:
            raise SystemExit(f"bps keys revoke: {exc.detail}") from None
        done = f"was already revoked on {_when(row.revoked_at)} UTC" if row.revoked_at else "is revoked"
        print(f"key {row.key_id} ({row.prefix}...) of tenant {row.tenant!r} {done}")


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S") if moment else ""


MAX_REQUEST_LINE = 8190


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
        # gunicorn's maximum (default 4094): a longer request line gets its plain-text 400, not problem+json.
        "--limit-request-line", str(MAX_REQUEST_LINE),
        "--config", "python:service.gunicorn_config",
        "service.app:create_app()",
    ]


def run_api(settings: Settings) -> None:
    """Replace this process with gunicorn (signals then go straight to it)."""
    from bps.metrics import prepare_multiprocess_dir  # noqa: PLC0415

    prepare_multiprocess_dir(settings, os.environ)
    argv = gunicorn_argv(settings)
    os.execv(argv[0], argv)


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
    key_commands.add_parser("list", help="every key: tenant, key id, prefix, created (never the key itself)")
    revoke = key_commands.add_parser("revoke", help="revoke a key (by its id or prefix): it then answers 401")
    revoke.add_argument("key", metavar="KEY_ID_OR_PREFIX")
    commands.add_parser("dev", help="`make run`: migrate, a dev key, the API and one worker")
    return parser


def main(argv: list[str] | None = None) -> int:
    choose_kernels()  # before anything loads NumPy (and with it OpenBLAS); inherited by `bps dev`'s children
    park_idle_threads()
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
        from worker.main import run_worker  # noqa: PLC0415  (the entry point of the worker layer)

        run_worker(settings, queues, args.concurrency, args.pool)
    elif args.command == "keys":
        run_keys_command(settings, args)
    elif args.command == "dev":
        from bps.dev import run_dev  # noqa: PLC0415

        return run_dev(settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
