"""gunicorn's settings for `bps api` (`-c python:bps.gunicorn_config`): its log lines in
LOG_FORMAT like the app's, and the metrics files of a gunicorn worker that exited marked dead."""
from __future__ import annotations

import os
from typing import Any

from bps.config import load_settings
from bps.logs import gunicorn_logconfig

_settings = load_settings()
logconfig_dict = gunicorn_logconfig(_settings.log_format, _settings.log_level)


def child_exit(_server: Any, worker: Any) -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess  # noqa: PLC0415

        multiprocess.mark_process_dead(worker.pid)
