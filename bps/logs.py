"""Logging of every process (API, worker, Celery): plain text, or one JSON object per line with
LOG_FORMAT=json (the default in docker-compose).

What a line is about travels in context variables, not in the message: the API binds the
request id for the whole request, the worker binds job_id / worker when a task starts and the
attempt once the job is claimed (`job_context`). ContextFilter copies them onto every record,
so a line logged anywhere below (the job store, the engine, a library) carries them.
Celery's own task lines ("received", "succeeded") are logged outside the task; their job id
is read from the task's arguments, which Celery passes with the record. gunicorn's access line
takes the request id from the response's X-Request-ID header, which gunicorn passes likewise.
"""
from __future__ import annotations

import ast
import contextlib
import contextvars
import json
import logging
import sys
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

CONTEXT_FIELDS = ("request_id", "job_id", "prediction_id", "attempt", "worker")
# worker.celery_app's task names (bps does not import worker) and the field their argument fills
TASK_ID_FIELDS = {"bps.train_job": "job_id", "bps.run_prediction": "prediction_id"}
_context: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar("bps_log_context", default={})  # noqa: B039
_HANDLER_NAME = "bps"


@contextlib.contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Bind `fields` (request_id, job_id, attempt, worker) to every line logged inside."""
    token = _context.set({**_context.get(), **fields})
    try:
        yield
    finally:
        _context.reset(token)


def bind(**fields: Any) -> contextvars.Token:
    """Add `fields` to the current context (e.g. the attempt, known only after the claim);
    `unbind(token)` puts back the context from before."""
    return _context.set({**_context.get(), **fields})


def unbind(token: contextvars.Token) -> None:
    _context.reset(token)


def current_context() -> dict[str, Any]:
    return dict(_context.get())


def _access_line_fields(record: logging.LogRecord) -> dict[str, str]:
    """gunicorn's access line is logged after the request's context is gone; its response
    headers, among them X-Request-ID, come with the record."""
    args = record.args if isinstance(record.args, dict) else None
    request_id = args.get("{x-request-id}o") if args and record.name == "gunicorn.access" else None
    return {"request_id": str(request_id)} if request_id else {}


def _celery_task_fields(record: logging.LogRecord) -> dict[str, str]:
    """{"job_id": …} of a Celery line about one of our tasks ("received", "succeeded"…)."""
    args = record.args if isinstance(record.args, dict) else None
    field = TASK_ID_FIELDS.get(args.get("name")) if args else None
    if field is None or not isinstance(args.get("args"), str):
        return {}
    try:
        task_args = ast.literal_eval(args["args"])  # Celery's repr of the task's arguments
    except (ValueError, SyntaxError):
        return {}
    return {field: str(task_args[0])} if isinstance(task_args, (tuple, list)) and task_args else {}


class ContextFilter(logging.Filter):
    """Copies the bound context onto the record (fields given with `extra=` win)."""

    def __init__(self, worker: str | None = None) -> None:
        super().__init__()
        self.worker = worker

    def filter(self, record: logging.LogRecord) -> bool:
        fields = {name: value for name, value in _context.get().items() if value is not None}
        if not fields.keys() & {"request_id", "job_id", "prediction_id"}:  # an attempt alone names nothing
            fields = _celery_task_fields(record) or _access_line_fields(record)
        for name in CONTEXT_FIELDS:
            if getattr(record, name, None) is None:
                setattr(record, name, fields.get(name))
        if (record.job_id or record.prediction_id) is not None and record.worker is None:
            record.worker = self.worker
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the context fields that are set,
    and the traceback of an exception."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname, "logger": record.name, "message": record.getMessage(),
            "process": record.process,
        }
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                line[name] = value
        if getattr(record, "job_id", None) is not None:  # a line about a job names all three
            line.setdefault("attempt", None)
            line.setdefault("worker", None)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s%(context)s: %(message)s"


class TextFormatter(logging.Formatter):
    """The plain-text line, with `[job=… attempt=… request=…]` when the context has them."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        parts = [f"{name}={getattr(record, name)}" for name in CONTEXT_FIELDS if getattr(record, name, None) is not None]
        record.context = f" [{' '.join(parts)}]" if parts else ""
        return super().format(record)


def make_formatter(log_format: str) -> logging.Formatter:
    if log_format not in ("json", "text"):
        raise ValueError(f"LOG_FORMAT must be 'json' or 'text', not {log_format!r}")
    return JsonFormatter() if log_format == "json" else TextFormatter()


def configure_logging(log_format: str, level: str = "INFO", worker: str | None = None) -> None:
    """One stderr handler on the root logger with the context filter; idempotent (a second call
    replaces the handler this module added, and leaves others alone)."""
    root = logging.getLogger()
    root.handlers = [h for h in root.handlers if h.get_name() != _HANDLER_NAME]
    handler = logging.StreamHandler(sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.addFilter(ContextFilter(worker))
    handler.setFormatter(make_formatter(log_format))
    root.addHandler(handler)
    root.setLevel(level.upper())
    logging.captureWarnings(True)  # warnings.warn lines in the same format


def gunicorn_logconfig(log_format: str, level: str = "INFO") -> dict[str, Any]:
    """gunicorn's `logconfig_dict`: its own lines (boot, worker exits) in the same format."""
    return {
        "version": 1, "disable_existing_loggers": False,
        "filters": {"context": {"()": ContextFilter}},
        "formatters": {"bps": {"()": JsonFormatter if log_format == "json" else TextFormatter}},
        # named like configure_logging's handler, which the app then replaces instead of doubling
        "handlers": {_HANDLER_NAME: {"class": "logging.StreamHandler", "stream": "ext://sys.stderr",
                                     "formatter": "bps", "filters": ["context"]}},
        "root": {"level": level.upper(), "handlers": [_HANDLER_NAME]},
        "loggers": {"gunicorn.error": {"level": level.upper(), "handlers": [], "propagate": True},
                    "gunicorn.access": {"level": level.upper(), "handlers": [], "propagate": True}},
    }
