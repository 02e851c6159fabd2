"""Run one asynchronous prediction: claim it, read its dataset a chunk of rows at a time, store
each chunk's outputs (worker/prediction_store.py), finish. The job machinery is reused: the
same RunControl and RunWatcher thread, the same fencing, retries, requeue on shutdown, and the
reaper republishes a lost one. Memory holds a few chunks of PREDICTION_CHUNK_ROWS rows, whatever
the dataset's size: the one predicted, two read ahead (none for an .npz on SQLite, read between
chunks by both cores: bps.prediction_rows), the outputs of the one before it until the next is
read, and at most two waiting to be stored."""
from __future__ import annotations

import io
import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import Connection

from bps.config import Settings
from bps.prediction_rows import read_ahead
from bps.db import session_scope
from bps.input_range import first_non_finite_output
from bps.models import Dataset, Model, Prediction
from bps.preprocessor import Preprocessor
from bps.problems import Unprocessable
from worker import prediction_store
from worker.gpu import release_gpu_memory
from worker.job_store import requeue_job, with_db_retries
from worker.prediction_store import PredictionSnapshot
from worker.runner import SHUTDOWN, JobAbandoned, RunControl, RunWatcher, default_worker_id, describe_error

log = logging.getLogger(__name__)


def run_prediction(prediction_id: str, *, settings: Settings, worker_id: str | None = None) -> None:
    """Claim and run prediction `prediction_id`; returns quietly when it is not claimable."""
    job = prediction_store.claim_prediction(settings, prediction_id, worker_id or default_worker_id())
    if job is None:
        log.info("prediction %s: not claimable (taken, finished or missing)", prediction_id)
        return
    control = RunControl(settings.job_time_limit_s)
    watcher = RunWatcher(settings, job, control, beat=prediction_store.heartbeat)
    watcher.start()
    try:
        _run(settings, job, control)
    except JobAbandoned:
        log.info("prediction %s attempt %d: no longer ours, stopped", job.id, job.attempt)
    except Exception as exc:  # noqa: BLE001  (every failure ends the prediction, with a reason)
        if isinstance(exc, Unprocessable):  # the data or a deleted dataset: said in `error`, no traceback
            log.warning("prediction %s attempt %d failed: %s", job.id, job.attempt, exc.detail)
        else:
            log.exception("prediction %s attempt %d failed", job.id, job.attempt)
        error = describe_error(exc).replace("training failed", "the prediction failed")
        with_db_retries(prediction_store.finish_prediction, settings, job.id, job.attempt, "failed", error=error)
    finally:
        watcher.done.set()
        release_gpu_memory()


def load_inputs(settings: Settings, job: PredictionSnapshot) -> tuple[Any, Preprocessor, str, bool]:
    """(network, preprocessor, dataset format, whether its profile says every X value is
    finite); a sentence saying which one went missing."""
    from worker.engine import Network  # noqa: PLC0415
    from worker.engine.backend import resolve_device  # noqa: PLC0415

    with session_scope(settings.database_url) as session:
        model = session.get(Model, job.model_id)
        if model is None:
            raise Unprocessable(f"model {job.model_id} was deleted before the prediction ran")
        dataset = session.get(Dataset, job.dataset_id)
        if dataset is None:
            raise Unprocessable(f"dataset {job.dataset_id} was deleted before the prediction ran: "
                                "upload it again and ask for a new prediction")
        weights, preprocessing, fmt = model.weights, model.preprocessing, dataset.format
        x_profile = next((column for column in dataset.columns or [] if column.get("name") == "X"), {})
    device = resolve_device("auto") if job.queue == "gpu" else "cpu"
    finite = fmt == "npz" and x_profile.get("non_finite") == 0
    return Network.load(io.BytesIO(weights), device=device), Preprocessor.from_json(preprocessing), fmt, finite


def model_inputs(prep: Preprocessor, batch: Any, known_finite: bool = False) -> np.ndarray:
    """prep's transform of one batch. Finite .npz rows of the right width skip its float64 copy:
    the network casts them to its dtype, the same values the float64 detour gives. `known_finite`
    (the dataset's upload profile counted no non-finite X value) spares the pass that checks."""
    if not isinstance(batch, np.ndarray):
        return prep.transform_frame(batch)
    width_fits = batch.ndim >= 2 and int(np.prod(batch.shape[1:])) == prep.width
    if width_fits and batch.dtype.kind == "f" and (known_finite or _all_finite(batch)):
        return batch.reshape((len(batch), *prep.input_shape))
    return prep.transform_arrays(batch)


def _all_finite(batch: np.ndarray) -> bool:
    """Whether every value is finite, from one sum and no mask: a NaN or infinity makes any sum
    non-finite (a sum that overflows only sends finite rows through prep's float64 copy)."""
    with np.errstate(over="ignore"):
        return bool(np.isfinite(np.add.reduce(batch, axis=None)))


def chunk_outputs(net: Any, prep: Preprocessor, batch: Any, start: int, known_finite: bool = False) -> np.ndarray:
    """The network's outputs for one batch of dataset rows; errors name the dataset's row."""
    try:
        X = model_inputs(prep, batch, known_finite)
    except Unprocessable as exc:
        raise Unprocessable(f"in rows {start}..{start + len(batch) - 1}: {exc.detail}") from None
    with np.errstate(over="ignore", invalid="ignore"):  # a non-finite output is refused just below
        outputs = np.asarray(net.predict(X))
    found = first_non_finite_output(outputs, X, prep)
    if found is not None:
        row, name, value = found
        raise Unprocessable(f"row {start + row} gives a non-finite output: its values are beyond what the model "
                            f"handles (its largest input is column {name!r}, {value:.4g}); remove or fix the row")
    return outputs


@dataclass
class PhaseSeconds:
    """Where the predicting thread's time went, logged when a run succeeds (`python -m bench
    predictions` prints it): its waits for its batches (an .npz on SQLite: their reading, by
    both cores) and its forward passes. The writer thread's storing: ChunkWriter.storing_s."""
    reading: float = 0.0
    predicting: float = 0.0


class ChunkWriter(threading.Thread):
    """Stores the chunks, in order, in a thread of its own: one chunk's write and commit (mostly
    waiting on the database) overlap the next chunk's products. At most `depth` wait."""

    def __init__(self, settings: Settings, job: PredictionSnapshot, depth: int = 2) -> None:
        super().__init__(name=f"chunks-{job.id}", daemon=True)
        self.settings, self.job = settings, job
        self.pending: queue.Queue = queue.Queue(maxsize=depth)
        self.failure: BaseException | None = None
        self.lost = False
        self.closed = False  # close()'s None taken
        self.storing_s = 0.0  # overlapping the predicting thread's PhaseSeconds

    @property
    def healthy(self) -> bool:
        """No store (nor the connection) has failed and the prediction is still ours."""
        return self.failure is None and not self.lost

    def run(self) -> None:
        """Takes every chunk put off the queue until close()'s None, storing it unless a failure
        (the connection's too) or the lost prediction came first: no put() ever waits on a full
        queue that nobody takes from."""
        try:
            with prediction_store.chunk_connection(self.settings) as connection:
                for item in self._taken():
                    if self.healthy:
                        self._store(connection, *item)
        except BaseException as exc:  # noqa: BLE001  (opening or closing the connection; raised in the predicting thread)
            self.failure = self.failure or exc
        for _ in self._taken():  # a connection that failed to open: the chunks put are taken, unstored
            pass

    def _taken(self) -> Iterator[tuple[int, np.ndarray, int]]:
        """The chunks put, in order, until close()'s None has been taken (then none at all)."""
        while not self.closed:
            item = self.pending.get()
            if item is None:
                self.closed = True
            else:
                yield item

    def _store(self, connection: Connection, seq: int, outputs: np.ndarray, rows_done: int) -> None:
        started = time.perf_counter()
        try:
            self.lost = not with_db_retries(prediction_store.record_chunk, connection, self.job, seq, outputs,
                                            rows_done, what=f"prediction {self.job.id}: storing rows")
        except BaseException as exc:  # noqa: BLE001  (raised in the predicting thread)
            self.failure = exc
        self.storing_s += time.perf_counter() - started

    def check(self) -> None:
        if self.failure is not None:
            raise self.failure
        if self.lost:
            raise JobAbandoned

    def put(self, seq: int, outputs: np.ndarray, rows_done: int) -> None:
        """Hands a chunk over, unless the writer is not `healthy` (what check() raises on): it
        never raises, so a run failing with an error of its own keeps that error. A
        writer that fails after this test takes the chunk off unstored, as run() does."""
        if self.healthy:
            self.pending.put((seq, outputs, rows_done))

    def close(self) -> None:
        """Waits until every chunk put is stored (or refused)."""
        self.pending.put(None)
        self.join()


def _run(settings: Settings, job: PredictionSnapshot, control: RunControl) -> None:
    inputs = with_db_retries(load_inputs, settings, job, what=f"prediction {job.id}: loading")
    writer, seconds = ChunkWriter(settings, job), PhaseSeconds()
    writer.start()
    try:
        done = _predict_chunks(settings, job, control, inputs, writer, seconds)
    finally:
        writer.close()
    writer.check()
    if done is None:  # stopped before the end
        _stopped(settings, job, control)
        return
    if not with_db_retries(prediction_store.finish_prediction, settings, job.id, job.attempt, "succeeded",
                           n=done, progress=1.0):
        raise JobAbandoned
    log.info("prediction %s attempt %d: %d rows; %.2f s waiting for rows, %.2f s predicting, %.2f s storing "
             "(writer thread)", job.id, job.attempt, done, seconds.reading, seconds.predicting, writer.storing_s)


def _predict_chunks(settings: Settings, job: PredictionSnapshot, control: RunControl, model: tuple,
                    writer: ChunkWriter, seconds: PhaseSeconds,
                    clock: Callable[[], float] = time.perf_counter) -> int | None:
    """Rows predicted in all (None when told to stop first), each chunk handed to `writer` once
    the next batch is read (or none is left): its store then overlaps that batch's products, not
    its read. A read is both cores' (bps.prediction_rows) and waits for the slower one, so a store
    during it costs the read about its whole time; during the products it costs less (a scratch
    A/B of this loop, not kept; `python -m bench predictions` prints the worker's waits for rows)."""
    net, prep, fmt, finite = model
    done = job.rows_done  # rows stored by earlier attempts: read on from the first one not stored
    batches = read_ahead(settings.database_url, job.dataset_id, fmt, settings.prediction_chunk_rows, start=done)
    held = None  # the last chunk predicted, for the writer once the next batch is read
    for seq in itertools.count(job.chunks_done):
        asked = clock()
        try:
            batch = next(batches, None)  # None: no rows left
        finally:  # after a read that failed too: the chunk held is stored still, a retry reads on after it
            seconds.reading += clock() - asked
            if held is not None:
                writer.put(*held)
        if held is not None:  # handed to a failed or lost writer, it ends the run (a read's error stays the one raised)
            writer.check()
        if batch is None:
            return done
        if control.should_stop():
            return None
        started = clock()
        outputs = chunk_outputs(net, prep, batch, done, finite)
        seconds.predicting += clock() - started
        done += len(outputs)
        held = (seq, outputs, done)


def _stopped(settings: Settings, job: PredictionSnapshot, control: RunControl) -> None:
    if control.lost:
        raise JobAbandoned
    if SHUTDOWN.is_set() and not control.timed_out():
        from worker.queue import publish_prediction  # noqa: PLC0415

        if requeue_job(settings, job.id, job.attempt, table=Prediction):
            try:
                publish_prediction(settings, job.id, job.queue)
            except Exception:  # noqa: BLE001
                log.warning("prediction %s: republish failed; the reaper will publish it", job.id, exc_info=True)
        return
    error = (f"time limit of {control.time_limit_s:g} s (JOB_TIME_LIMIT_S) reached: "
             "predict a smaller dataset, or split it")
    prediction_store.finish_prediction(settings, job.id, job.attempt, "failed", error=error)
