"""gunicorn's settings for `bps api` (`-c python:service.gunicorn_config`): its log lines in
LOG_FORMAT like the app's, the broker publisher made ready as each worker starts, and the
metrics files of a gunicorn worker that exited marked dead."""
from __future__ import annotations

import os
import threading
from typing import Any

from bps.config import load_settings
from bps.logs import gunicorn_logconfig

_settings = load_settings()
logconfig_dict = gunicorn_logconfig(_settings.log_format, _settings.log_level)


def child_exit(_server: Any, worker: Any) -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess  # noqa: PLC0415

        multiprocess.mark_process_dead(worker.pid)


def post_worker_init(_worker: Any) -> threading.Thread:
    """Connects the publisher in the background: the first job or prediction after a start
    otherwise waits for it (the Celery app, the broker connection, its queues declared)."""
    from worker.queue import warm_publisher  # noqa: PLC0415

    warming = threading.Thread(target=warm_publisher, args=(_settings,), daemon=True, name="warm-publisher")
    warming.start()
    return warming
