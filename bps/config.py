"""Settings, read from environment variables only (12-factor). Nothing is read at import time."""
from __future__ import annotations

import os
from dataclasses import dataclass, fields


def _default_broker_url(var_dir: str) -> str:
    # kombu's SQLAlchemy transport on a SQLite file: a broker that needs no server.
    return f"sqla+sqlite:///{var_dir}/broker.db"


@dataclass(frozen=True)
class Settings:
    database_url: str
    broker_url: str
    host: str = "127.0.0.1"
    port: int = 8000
    var_dir: str = "var"
    job_heartbeat_timeout_s: float = 60.0
    heartbeat_interval_s: float = 5.0
    # How often a running job's worker reads its cancel flag (one indexed SELECT; the batch
    # loop only looks at an in-memory flag): a cancel is honoured within about this long.
    cancel_poll_interval_s: float = 0.25
    job_max_attempts: int = 3
    job_time_limit_s: float = 24 * 3600.0
    max_upload_bytes: int = 200 * 1024 * 1024
    max_dataset_rows: int = 5_000_000
    max_params: int = 50_000_000
    max_epochs: int = 10_000
    max_batch_size: int = 65_536
    max_work_rows: int = 2_000_000_000  # epochs x rows
    max_prediction_rows: int = 10_000
    prediction_chunk_rows: int = 10_000  # rows per stored chunk of an asynchronous prediction
    # Limits that protect the service (env: the upper-case name, e.g. MAX_QUEUED_JOBS_PER_TENANT).
    # A tenant may hold at most MAX_QUEUED_JOBS_PER_TENANT queued jobs and at most
    # MAX_QUEUED_JOBS_PER_TENANT + MAX_RUNNING_JOBS_PER_TENANT queued and running jobs together;
    # a submission past either answers 429 with Retry-After.
    max_queued_jobs_per_tenant: int = 100
    max_running_jobs_per_tenant: int = 8
    # Requests per API key per clock minute (429 + Retry-After past it; 0 = off): counted in
    # Redis when BROKER_URL is redis://, else per API process (see service/rate_limit.py).
    rate_limit_per_minute: int = 6000
    dataset_chunk_bytes: int = 4 * 1024 * 1024
    worker_heartbeat_timeout_s: float = 30.0
    reaper_interval_s: float = 5.0  # how often each worker looks for lost jobs (REAPER_INTERVAL_S)
    # A worker that cannot reach the database when it takes a job tries again every
    # CLAIM_DB_RETRY_S, CLAIM_DB_RETRIES times, then gives the message up with an error (the
    # job stays queued; a worker's reaper republishes it once the database answers).
    claim_db_retries: int = 30
    claim_db_retry_s: float = 10.0
    metrics_enabled: bool = True  # GET /metrics (METRICS_ENABLED=0: 404)
    log_format: str = "text"  # LOG_FORMAT: text | json (one JSON object per line)
    log_level: str = "INFO"
    # GET /v1/jobs/{id}/events: open streams per API process (503 + Retry-After beyond; `bps api`
    # adds this many gunicorn threads), and how often each stream looks for news.
    max_event_streams: int = 64
    event_poll_interval_s: float = 0.25


def _parse_bool(raw: str) -> bool:
    if raw.strip().lower() in ("1", "true", "yes", "on"):
        return True
    if raw.strip().lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(raw)


_ENV_NAMES = {
    "database_url": "DATABASE_URL",
    "broker_url": "BROKER_URL",
    "host": "HOST",
    "port": "PORT",
    "var_dir": "BPS_VAR_DIR",
}


def load_settings(environ: dict[str, str] | None = None) -> Settings:
    """Build Settings from `environ` (default: os.environ). Other fields read from their
    upper-case names, e.g. JOB_HEARTBEAT_TIMEOUT_S, MAX_UPLOAD_BYTES."""
    env = os.environ if environ is None else environ
    var_dir = env.get("BPS_VAR_DIR", "var")
    values: dict[str, object] = {
        "database_url": env.get("DATABASE_URL") or f"sqlite:///{var_dir}/bps.db",
        "broker_url": env.get("BROKER_URL") or _default_broker_url(var_dir),
        "var_dir": var_dir,
    }
    for field in fields(Settings):
        if field.name in values:
            continue
        name = _ENV_NAMES.get(field.name, field.name.upper())
        raw = env.get(name)
        if raw is None or raw == "":
            continue
        kind = type(field.default)
        try:
            values[field.name] = _parse_bool(raw) if kind is bool else kind(raw)
        except ValueError as exc:
            raise ValueError(f"environment variable {name}={raw!r} is not a valid {kind.__name__}") from exc
    return Settings(**values)  # type: ignore[arg-type]
