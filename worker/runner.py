"""Run one training job: claim it, train it, record every epoch, store the model.

Every state change is a short, fenced transaction (worker/job_store.py). A job is never left
`running` by an exception here: any failure ends it `failed` with a sentence a user can act on.
After every epoch the engine's training state is checkpointed with the epoch row; a run that
takes over a job (attempt > 1) resumes from that checkpoint with `fit(resume=state)`.
Checkpointing every epoch is kept (a killed worker costs at most the epoch in progress): the
encode (~1 ms, uncompressed .npz) plus the checkpoint UPDATE (~1 ms) is about 1% of a 0.2 s
epoch on SQLite (bench/bench_service.py), too little to trade the guarantee for.
"""
from __future__ import annotations

import contextvars
import logging
import multiprocessing
import os
import socket
import threading
import time
from typing import Any

from bps.checkpoints import decode_state, encode_state
from bps.config import Settings
from bps.db import session_scope
from bps.logs import bind as bind_log_context
from bps.problems import ProblemError
from worker import job_store, outcome
from worker.gpu import GPU_OOM_MESSAGE, is_gpu_out_of_memory, release_gpu_memory
from worker.job_store import JobSnapshot
from worker.progress import Progress

log = logging.getLogger(__name__)
FINISH_RETRIES = 5
# Set when this worker is shutting down: a running job stops at the next batch and goes back to
# the queue (worker/registry.py sets it on Celery's worker_shutting_down, in the main process).
# A process-shared event, created before a prefork pool forks: the pool's children, where the
# jobs run, see it too (a threading.Event would be a copy, and a prefork worker stopped by
# `docker compose stop` would train on until the grace period ran out and it was killed).
# Reading it takes a lock shared between processes, so the run's watcher thread copies it into
# the run's own stop event and the per-batch check reads memory only.
SHUTDOWN = multiprocessing.get_context("fork").Event()


class JobAbandoned(Exception):
    """This attempt no longer owns the job (cancelled or taken over): write nothing more."""


class RunControl:
    """Shared by the training thread and the watcher thread: when to stop, and why."""

    def __init__(self, time_limit_s: float, elapsed_s: float = 0.0, last_epoch: int = 0) -> None:
        self.stop = threading.Event()
        if SHUTDOWN.is_set():  # the watcher's first look comes a tick later
            self.stop.set()
        self.lost = False  # the job was taken from us: write nothing more
        self.cancel_requested = False
        self.time_limit_s = time_limit_s
        self.deadline = time.monotonic() + time_limit_s - elapsed_s
        self.last_epoch = last_epoch  # the last epoch recorded (by any attempt)
        self.progress: Progress | None = None  # set once training starts

    def should_stop(self) -> bool:
        return self.stop.is_set() or time.monotonic() > self.deadline

    def timed_out(self) -> bool:
        return time.monotonic() > self.deadline

    def observe(self, owned: bool, cancel_requested: bool) -> None:
        if not owned:
            self.lost = True
        self.cancel_requested = self.cancel_requested or cancel_requested
        if cancel_requested or not owned:
            self.stop.set()


class RunWatcher(threading.Thread):
    """The run's one periodic thread. Every `cancel_poll_interval_s` it copies SHUTDOWN into the
    stop event and, given `poll` (job_store.run_flags, a read-only SELECT), reads the cancel flag
    and ownership: a cancel is honoured at the next batch, without a database round trip per
    batch. Every `heartbeat_interval_s` it refreshes heartbeat_at with `beat` (job_store.heartbeat,
    or a prediction's). Both `beat` and `poll(settings, id, attempt)` -> (owned, cancel_requested)."""

    def __init__(self, settings: Settings, job: Any, control: RunControl, beat: Any = job_store.heartbeat,
                 poll: Any = None) -> None:
        super().__init__(name=f"run-watcher-{job.id}", daemon=True)
        self.settings, self.job, self.control, self.beat, self.poll = settings, job, control, beat, poll
        self.done = threading.Event()
        self.log_context = contextvars.copy_context()  # its lines name the job like the run's

    def run(self) -> None:
        self.log_context.run(self._watch)

    def _watch(self) -> None:
        interval = self.settings.heartbeat_interval_s
        next_beat = time.monotonic() + interval
        while not self.done.wait(min(self.settings.cancel_poll_interval_s, interval)):
            if SHUTDOWN.is_set():
                self.control.stop.set()
            if time.monotonic() >= next_beat:
                self._observe(self.beat, "heartbeat failed", logging.WARNING)  # a lost one is retried
                next_beat = time.monotonic() + interval
            elif self.poll is not None and not self.control.stop.is_set():
                self._observe(self.poll, "cancel poll failed", logging.DEBUG)  # the next poll tries again

    def _observe(self, read: Any, failure: str, level: int) -> None:
        try:
            self.control.observe(*read(self.settings, self.job.id, self.job.attempt))
        except Exception:  # noqa: BLE001  (training goes on)
            log.log(level, "job %s: %s", self.job.id, failure, exc_info=True)


def default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def run_job(job_id: str, *, settings: Settings, worker_id: str | None = None) -> None:
    """Claim and train job `job_id`; returns quietly when the job is not claimable."""
    job = job_store.claim_job(settings, job_id, worker_id or default_worker_id())
    if job is None:
        job_store.cancel_if_queued_and_requested(settings, job_id)
        log.info("job %s: not claimable (taken, cancelled, finished or missing)", job_id)
        return
    bind_log_context(attempt=job.attempt)
    log.info("job %s attempt %d: claimed by %s", job.id, job.attempt, worker_id or default_worker_id())
    control = RunControl(time_limit_of(settings, job), job.elapsed_s, job.resume_epoch)
    watcher = RunWatcher(settings, job, control, beat=_job_beat(control), poll=job_store.run_flags)
    watcher.start()
    try:
        _train(settings, job, control)
    except JobAbandoned:
        log.info("job %s attempt %d: no longer ours, stopped", job.id, job.attempt)
    except ProblemError as exc:  # the data or the spec, named in the job's error: no traceback
        log.warning("job %s attempt %d failed: %s", job.id, job.attempt, exc.detail)
        _finish_or_log(settings, job, "failed", **_error_values(exc))
    except Exception as exc:  # noqa: BLE001  (every failure must end the job, never be lost)
        log.exception("job %s attempt %d failed", job.id, job.attempt)
        _finish_or_log(settings, job, "failed", **_error_values(exc))
    finally:
        watcher.done.set()
        release_gpu_memory()


def _job_beat(control: RunControl) -> Any:
    """job_store.heartbeat that also writes the progress within the epoch and the ETA."""
    def beat(settings: Settings, job_id: str, attempt: int) -> tuple[bool, bool]:
        progress = control.progress
        if progress is None:
            return job_store.heartbeat(settings, job_id, attempt)
        return job_store.heartbeat(settings, job_id, attempt, progress=progress.fraction, eta_s=progress.eta_s())
    return beat


def _error_values(exc: BaseException) -> dict[str, Any]:
    error = describe_error(exc)
    return {"error": error, "stop_reason": "error", "stop_detail": error, "eta_s": None}


def time_limit_of(settings: Settings, job: JobSnapshot) -> float:
    """The spec's `time_limit_s`, else the job's (set at submission), capped by the server's
    JOB_TIME_LIMIT_S (a job may have been queued under a higher cap)."""
    requested = job.spec.get("time_limit_s") or job.time_limit_s or settings.job_time_limit_s
    return min(float(requested), settings.job_time_limit_s)


def _finish_or_log(settings: Settings, job: JobSnapshot, status: str, **values: Any) -> None:
    """finish_job, retried while the database is unreachable, so the outcome is never lost."""
    for attempt in range(FINISH_RETRIES):
        try:
            job_store.finish_job(settings, job.id, job.attempt, status, **values)
            return
        except Exception:  # noqa: BLE001
            log.warning("job %s: could not record %s (try %d)", job.id, status, attempt + 1, exc_info=True)
            time.sleep(min(2**attempt, 10))
    log.error("job %s: gave up recording %s %r; it will be taken over after the heartbeat timeout",
              job.id, status, values)


def describe_error(exc: BaseException) -> str:
    """A sentence a user can act on."""
    from worker.engine.backend import DeviceUnavailable  # noqa: PLC0415

    if isinstance(exc, ProblemError):
        return exc.detail
    if isinstance(exc, DeviceUnavailable):
        return f"this job needs a GPU but the worker that took it has none ({exc}): set \"device\": \"cpu\" or \"auto\""
    if is_gpu_out_of_memory(exc):
        limit = os.environ.get("CUPY_GPU_MEMORY_LIMIT")
        return GPU_OOM_MESSAGE.format(limit=f" (CUPY_GPU_MEMORY_LIMIT={limit})" if limit else "")
    if isinstance(exc, MemoryError):
        return "the worker ran out of memory: lower batch_size or the number of units, or use a smaller dataset"
    detail = str(exc).strip() or type(exc).__name__
    return f"training failed: {detail}. Check the spec and the dataset, then submit the job again"


def choose_device(job: JobSnapshot) -> str:
    from worker.engine.backend import resolve_device  # noqa: PLC0415

    requested = str(job.spec.get("device") or "auto")
    if requested == "auto" and job.queue != "gpu":
        return "cpu"
    return resolve_device(requested)


def load_training_data(settings: Settings, job: JobSnapshot) -> tuple[Any, Any, Any]:
    from bps.datasets import load_dataset_bytes  # noqa: PLC0415
    from bps.models import Dataset  # noqa: PLC0415
    from bps.preprocessing import prepare_training_data  # noqa: PLC0415

    def read() -> tuple[str, bytes]:
        with session_scope(settings.database_url) as session:
            dataset = session.get(Dataset, job.dataset_id)
            if dataset is None:
                raise ValueError(f"dataset {job.dataset_id} was deleted before training started; upload it again")
            return dataset.format, load_dataset_bytes(session=session, dataset_id=job.dataset_id)

    fmt, raw = job_store.with_db_retries(read, what=f"job {job.id}: reading the dataset")
    # Deterministic in the dataset's bytes: a resumed run trains on exactly the same arrays.
    spec = job.spec
    return prepare_training_data(
        raw, fmt, target=job.target, features=job.features, input_shape=job.input_shape,
        task=str(spec.get("loss") or job.task or "cross_entropy"), impute=job.impute,
        validation_split=float(spec.get("validation_split") or 0.0), validation=spec.get("validation", "last"),
        seed=int(spec.get("seed") or 0), dtype=spec.get("dtype", "float32"),
    )


def _train(settings: Settings, job: JobSnapshot, control: RunControl) -> None:
    X, y, preprocessor = load_training_data(settings, job)
    from worker.engine import Network  # noqa: PLC0415
    device = choose_device(job)
    if not job_store.with_db_retries(job_store.set_device, settings, job.id, job.attempt, device):
        raise JobAbandoned
    net = Network.from_spec(job.spec, input_shape=tuple(int(d) for d in X.shape[1:]), device=device,
                            n_outputs=int(preprocessor.n_outputs))

    def on_epoch(record: dict[str, Any]) -> None:
        state = encode_state(net.training_state())
        control.observe(*job_store.with_db_retries(
            job_store.record_epoch, settings, job, record, state, eta_s=control.progress.eta_s(),
            what=f"job {job.id}: recording an epoch"))
        control.last_epoch = int(record["epoch"])

    resume = decode_state(job.checkpoint) if job.checkpoint is not None else None
    if resume is not None:
        log.info("job %s attempt %d: resuming after epoch %d", job.id, job.attempt, job.resume_epoch)
    control.progress = Progress(int(job.spec["epochs"]), job.resume_epoch)
    history = net.fit(X, y, on_epoch=on_epoch, should_stop=control.should_stop, resume=resume,
                      on_batch=control.progress.on_batch)
    if control.lost:
        raise JobAbandoned
    warnings = _split_warnings(net.spec, y, preprocessor.classes) + [str(w) for w in history.warnings]
    _finish(settings, job, control, net, history, preprocessor, warnings)


def _split_warnings(spec: dict[str, Any], y: Any, classes: list[Any] | None) -> list[str]:
    from bps.splits import validation_class_warnings  # noqa: PLC0415

    if spec["loss"] not in ("cross_entropy", "binary_cross_entropy"):
        return []
    return validation_class_warnings(y, classes, validation_split=spec["validation_split"],
                                     mode=spec.get("validation", "last"), seed=int(spec["seed"]))


def _finish(settings: Settings, job: JobSnapshot, control: RunControl, net: Any, history: Any,
            preprocessor: Any, warnings: list[str]) -> None:
    if history.stop_reason == "cancelled" and SHUTDOWN.is_set() and not control.cancel_requested \
            and not control.timed_out():
        _requeue(settings, job)
        return
    result = outcome.decide(net.spec, history, epochs_done=net.train_state.epochs_done, timed_out=control.timed_out(),
                            time_limit_s=control.time_limit_s, last_epoch=control.last_epoch)
    values = {"warnings": warnings, "stop_reason": result.stop_reason, "stop_detail": result.detail, "eta_s": None}
    if result.error:
        values["error"] = result.error
    if result.status == "succeeded":
        values["progress"] = 1.0
    if not result.keeps_model:
        _finish_or_log(settings, job, result.status, **values)
        return
    model = job_store.with_db_retries(outcome.model_values, settings, job, net, preprocessor, history, result,
                                      what=f"job {job.id}: reading its best epoch")
    model_id = job_store.with_db_retries(job_store.finish_with_model, settings, job, model,
                                         {**values, "best_metrics": model["metrics"]}, status=result.status,
                                         what=f"job {job.id}: recording its model")
    log.info("job %s attempt %d: %s", job.id, job.attempt, f"{result.stop_reason}, model {model_id}"
             if model_id else "lost")


def _requeue(settings: Settings, job: JobSnapshot) -> None:
    """The worker is shutting down: the job goes back to the queue and the next worker resumes
    it from its checkpoint (an unpublished queued job is republished by the reaper)."""
    from worker.queue import publish_job  # noqa: PLC0415

    if job_store.requeue_job(settings, job.id, job.attempt):
        log.info("job %s attempt %d: worker shutting down, job requeued", job.id, job.attempt)
        try:
            publish_job(settings, job.id, job.queue)
        except Exception:  # noqa: BLE001
            log.warning("job %s: republish failed; the reaper will publish it", job.id, exc_info=True)
