"""Prometheus metrics (CONTRACT §8), aggregated over every API process and worker.

Two sources, chosen so that every topology (make run, bps api + bps worker on hosts,
docker-compose with workers in their own containers) gives the same answer without scraping
the workers themselves:

* Figures of the whole service are read at scrape time from the database and the broker, which
  every process shares: jobs by status, live workers by device, messages waiting per queue, rows
  predicted, and the epoch-duration histogram from the `epochs` table (each recorded epoch
  counted exactly once, also across takeovers; these counters fall, which Prometheus reads as a
  reset, only when a tenant deletes jobs or models).
* The API processes' own figures (request latencies) are kept in the process; under gunicorn in
  prometheus_client's multiprocess mode, in PROMETHEUS_MULTIPROC_DIR, which `bps api` sets and
  empties at start, so any gunicorn worker answers for all of them.

No label carries a tenant's name or id: the labels are status, queue, device, method, route
(the URL rule, e.g. /v1/jobs/<job_id>, never the path) and the response status.
"""
from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from bps.config import Settings
from bps.models import JOB_STATUSES, Epoch, Job, Prediction

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
DEVICES = ("cpu", "gpu")
EPOCH_BUCKETS_S = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0)
HTTP_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def prepare_multiprocess_dir(settings: Settings, environ: dict[str, str] | Any) -> str:
    """Set PROMETHEUS_MULTIPROC_DIR in `environ` (default var/prometheus) and empty it: files of
    a previous run would otherwise be added to this one's figures."""
    path = Path(environ.get(MULTIPROC_ENV) or Path(settings.var_dir) / "prometheus").resolve()
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    environ[MULTIPROC_ENV] = str(path)
    return str(path)


class ProcessMetrics:
    """What an API process measures itself (request latencies), in a registry of its own."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Histogram  # noqa: PLC0415

        self.registry = CollectorRegistry(auto_describe=True)
        self.http_seconds = Histogram(
            "bps_http_request_duration_seconds", "Time to answer an HTTP request, by URL rule and status.",
            ("method", "route", "status"), buckets=HTTP_BUCKETS_S, registry=self.registry)

    def collector(self) -> Any:
        """Every process's figures in multiprocess mode, else this process's."""
        if not os.environ.get(MULTIPROC_ENV):
            return self.registry
        from prometheus_client import CollectorRegistry, multiprocess  # noqa: PLC0415

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return registry


def job_families(session: Session) -> Iterator[Any]:
    from prometheus_client.core import GaugeMetricFamily  # noqa: PLC0415

    counts = dict.fromkeys(JOB_STATUSES, 0)
    counts.update({status: n for status, n in session.execute(select(Job.status, func.count()).group_by(Job.status))})
    jobs = GaugeMetricFamily("bps_jobs", "Jobs by status.", labels=["status"])
    for status, count in counts.items():
        jobs.add_metric([status], count)
    yield jobs


def worker_families(session: Session, max_age_s: float) -> Iterator[Any]:
    from prometheus_client.core import GaugeMetricFamily  # noqa: PLC0415

    from bps.workers import live_workers  # noqa: PLC0415

    counts = dict.fromkeys(DEVICES, 0)
    for worker in live_workers(session=session, max_age_s=max_age_s):
        counts[worker.device] = counts.get(worker.device, 0) + 1
    workers = GaugeMetricFamily("bps_workers", "Live workers (recent heartbeat) by device.", labels=["device"])
    for device, count in counts.items():
        workers.add_metric([device], count)
    yield workers


def epoch_families(session: Session) -> Iterator[Any]:
    """The histogram of every recorded epoch's duration, in one aggregate query."""
    from prometheus_client.core import HistogramMetricFamily  # noqa: PLC0415

    timed = Epoch.duration_s.is_not(None)
    columns = [func.count(Epoch.duration_s), func.coalesce(func.sum(Epoch.duration_s), 0.0)]
    columns += [func.coalesce(func.sum(case((Epoch.duration_s <= bound, 1), else_=0)), 0) for bound in EPOCH_BUCKETS_S]
    count, total, *cumulative = session.execute(select(*columns).where(timed)).one()
    buckets = [(str(bound), int(n)) for bound, n in zip(EPOCH_BUCKETS_S, cumulative)] + [("+Inf", int(count))]
    yield HistogramMetricFamily("bps_epoch_duration_seconds", "Training time of each recorded epoch.",
                                buckets=buckets, sum_value=float(total))


def prediction_families(session: Session) -> Iterator[Any]:
    """Rows of every stored prediction, whichever process computed it (API or worker)."""
    from prometheus_client.core import CounterMetricFamily  # noqa: PLC0415

    rows = session.scalar(select(func.coalesce(func.sum(Prediction.n), 0)))
    yield CounterMetricFamily("bps_prediction_rows", "Rows predicted (every stored prediction).", value=int(rows))


def queue_families(sizes: dict[str, int] | None) -> Iterator[Any]:
    from prometheus_client.core import GaugeMetricFamily  # noqa: PLC0415

    if sizes is None:  # the broker did not answer: no figure rather than a wrong one
        return
    depth = GaugeMetricFamily("bps_queue_depth", "Messages waiting in each broker queue.", labels=["queue"])
    for queue, size in sorted(sizes.items()):
        depth.add_metric([queue], size)
    yield depth


class ServiceCollector:
    """A prometheus_client collector of the figures read at scrape time."""

    def __init__(self, settings: Settings, session: Session, queue_sizes: Callable[[], dict[str, int] | None]):
        self.settings, self.session, self.queue_sizes = settings, session, queue_sizes

    def collect(self) -> Iterator[Any]:
        yield from job_families(self.session)
        yield from worker_families(self.session, self.settings.worker_heartbeat_timeout_s)
        yield from epoch_families(self.session)
        yield from prediction_families(self.session)
        yield from queue_families(self.queue_sizes())


def exposition(collectors: Iterable[Any]) -> tuple[bytes, str]:
    """The Prometheus text format of every family of `collectors`, and its content type."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest  # noqa: PLC0415

    class _All:
        def collect(self) -> Iterator[Any]:
            for collector in collectors:
                yield from collector.collect()

    return generate_latest(_All()), CONTENT_TYPE_LATEST  # type: ignore[arg-type]
