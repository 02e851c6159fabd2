"""`bps worker`: one Celery training worker process (logging, signals, warm imports, the pool).
bps.cli imports this module only when it starts a worker: the base layer does not import the
worker layer."""
from __future__ import annotations

import importlib
import os
import socket

from bps.config import Settings


def worker_pool(queues: list[str], concurrency: int) -> str:
    """GPU workers never fork after CUDA could be initialised: solo (or threads) there;
    CPU workers fork (prefork) when they run more than one job at a time."""
    if "gpu" in queues:
        return "solo" if concurrency == 1 else "threads"
    return "solo" if concurrency == 1 else "prefork"


def prepare_engine(concurrency: int) -> None:
    """Each job's share of the cores (cores // concurrency, unless BPS_BLAS_THREADS says; forked
    pool processes inherit it), and the CPU kernels compiled or loaded from Numba's disk cache."""
    from worker.engine import cpu_kernels, threads  # noqa: PLC0415

    threads.set_concurrency(concurrency)
    cpu_kernels.warm_up()  # for threads.default_threads(), which the concurrency just set divides


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
    prepare_engine(concurrency)
    quiet = ["--quiet"] if settings.log_format == "json" else []  # no banner between the JSON lines
    app.worker_main([
        *quiet, "worker", "--queues", ",".join(queues), "--concurrency", str(concurrency),
        "--pool", pool or worker_pool(queues, concurrency), "--hostname", name,
        "--loglevel", settings.log_level, "--without-gossip", "--without-mingle",
    ])

