"""worker.prediction_runner.model_inputs: finite .npz rows pass as they are (no float64 copy);
a NaN or an infinity anywhere sends the batch through the preprocessor's fill, and a float32
sum that overflows only costs that copy, never the values."""
from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import pytest

from bps.preprocessor import Preprocessor
from worker.prediction_runner import model_inputs


def preprocessor(fill: float | None) -> Preprocessor:
    return Preprocessor(source="array", mode="regression", input_shape=[2, 3], n_outputs=1, array_fill=fill)


def test_finite_rows_are_the_batch_itself_reshaped() -> None:
    batch = np.arange(24, dtype=np.float32).reshape(4, 6)
    inputs = model_inputs(preprocessor(None), batch)
    assert inputs.dtype == np.float32 and inputs.shape == (4, 2, 3)
    assert np.shares_memory(inputs, batch)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_non_finite_value_is_filled(bad: float) -> None:
    batch = np.ones((4, 6), np.float32)
    batch[2, 5] = bad
    inputs = model_inputs(preprocessor(-1.0), batch)
    assert inputs.dtype == np.float64
    assert inputs[2, 1, 2] == -1.0 and np.count_nonzero(inputs == -1.0) == 1


def test_rows_whose_sum_overflows_keep_their_values() -> None:
    batch = np.full((4, 6), np.finfo(np.float32).max / 2, np.float32)
    inputs = model_inputs(preprocessor(-1.0), batch)
    np.testing.assert_array_equal(inputs, batch.reshape(4, 2, 3).astype(np.float64))


def stored_npz(settings, tenant_id: str, X: np.ndarray, y: np.ndarray) -> str:  # noqa: ANN001
    from bps.datasets import create_dataset  # noqa: PLC0415
    from bps.db import session_scope  # noqa: PLC0415
    from tests.service.helpers import npz_bytes  # noqa: PLC0415

    with session_scope(settings.database_url) as session:
        return create_dataset(session=session, tenant_id=tenant_id, raw=npz_bytes(X=X, y=y), filename="d.npz",
                              name=None, chunk_bytes=1000, max_rows=10**6, max_array_bytes=10**9).id


def test_the_upload_profile_says_whether_the_rows_need_the_finite_check(settings) -> None:  # noqa: ANN001
    from bps.db import session_scope  # noqa: PLC0415
    from bps.tenants import create_api_key  # noqa: PLC0415
    from tests.service.helpers import npz_bytes, store_trained_model  # noqa: PLC0415
    from worker.prediction_runner import load_inputs  # noqa: PLC0415
    from worker.prediction_store import PredictionSnapshot  # noqa: PLC0415

    with session_scope(settings.database_url) as session:
        create_api_key(session=session, tenant_name="alice")
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(30, 4)), rng.integers(0, 2, size=30)
    spec = {"layers": [{"type": "dense", "activation": "softmax"}], "loss": "cross_entropy",
            "optimizer": {"type": "sgd", "learning_rate": 0.1}, "epochs": 1, "batch_size": 8}
    model_id = store_trained_model(settings, "alice", npz_bytes(X=X, y=y), "npz", target=None, spec=spec,
                                   impute="mean")
    model = PredictionSnapshot("p", "t", 1, model_id, "", "cpu", 30, 0, 0)
    with session_scope(settings.database_url) as session:
        from bps.models import Model  # noqa: PLC0415

        tenant_id = session.get(Model, model_id).tenant_id
    finite = stored_npz(settings, tenant_id, X, y)
    X[3, 2] = np.nan
    gaps = stored_npz(settings, tenant_id, X, y)
    known = {dataset_id: load_inputs(settings, replace(model, dataset_id=dataset_id))[3] for dataset_id in (finite, gaps)}
    assert known == {finite: True, gaps: False}


class _OverflowingNetwork:
    """A network whose output for row `bad_row` is infinite (as an overflow inside one gives)."""

    def __init__(self, bad_row: int) -> None:
        self.bad_row = bad_row

    def predict(self, X: np.ndarray) -> np.ndarray:
        outputs = np.zeros((len(X), 1))
        outputs[self.bad_row] = np.inf
        return outputs


def test_a_non_finite_output_names_the_dataset_row_and_its_largest_input_column() -> None:
    from bps.problems import Unprocessable  # noqa: PLC0415
    from worker.prediction_runner import chunk_outputs  # noqa: PLC0415

    batch = np.ones((4, 6), np.float32)
    batch[2, 4] = -3e38  # row 2 of the batch, input_shape (2, 3): X[1, 1]
    with pytest.raises(Unprocessable) as refused:
        chunk_outputs(_OverflowingNetwork(bad_row=2), preprocessor(None), batch, start=40)
    assert "row 42 " in refused.value.detail and "column 'X[1, 1]', -3e+38" in refused.value.detail


def test_an_overflowing_row_is_refused_without_numpy_warnings() -> None:
    """The refusal names the row; NumPy's overflow warning of the product would only be noise in
    the worker's log (the synchronous path suppresses it too)."""
    import warnings  # noqa: PLC0415

    from bps.problems import Unprocessable  # noqa: PLC0415
    from worker.engine import Network  # noqa: PLC0415
    from worker.prediction_runner import chunk_outputs  # noqa: PLC0415

    spec = {"layers": ["flatten", {"type": "dense", "units": 4, "activation": "relu"}, {"type": "dense", "units": 1}],
            "loss": "mse", "dtype": "float32", "device": "cpu"}
    net = Network.from_spec(spec, input_shape=(2, 3))
    batch = np.ones((4, 6), np.float32)
    batch[1] = 3e38
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(Unprocessable) as refused:
            chunk_outputs(net, preprocessor(None), batch, start=10)
    assert "row 11 " in refused.value.detail
    assert not [w for w in caught if issubclass(w.category, RuntimeWarning)], [str(w.message) for w in caught]


def predict_chunks(monkeypatch, batches, net, writer, should_stop=lambda: False,  # noqa: ANN001, ANN201
                   clock=time.perf_counter):
    """prediction_runner._predict_chunks over `batches` (read_ahead's stand-in) with `net`, for a
    job with nothing stored yet, every chunk handed to `writer`, its phases timed by `clock`:
    (rows done, its PhaseSeconds)."""
    from types import SimpleNamespace  # noqa: PLC0415

    from worker import prediction_runner  # noqa: PLC0415

    monkeypatch.setattr(prediction_runner, "read_ahead", lambda *args, **kwargs: batches)
    job = SimpleNamespace(rows_done=0, chunks_done=0, dataset_id="d")
    settings = SimpleNamespace(database_url="sqlite://", prediction_chunk_rows=1)
    seconds = prediction_runner.PhaseSeconds()
    done = prediction_runner._predict_chunks(settings, job, SimpleNamespace(should_stop=should_stop),
                                             (net, preprocessor(None), "npz", True), writer, seconds, clock)
    return done, seconds


def test_a_run_counts_its_waits_for_rows_and_its_forward_passes_apart(monkeypatch) -> None:  # noqa: ANN001
    """PhaseSeconds, on a fake clock given to the run that only the reads, forward passes and
    hand-overs move: the reads (and the wait that finds no more rows) go to `reading`,
    chunk_outputs' to `predicting`, a hand-over to the writer (a put that may wait for room) to
    neither; each chunk still reaches the writer once, in order."""
    from types import SimpleNamespace  # noqa: PLC0415

    clock = [0.0]

    def batches():  # noqa: ANN202
        for first in (0, 3):
            clock[0] += 1.0
            yield np.full((3, 6), first, np.float32)
        clock[0] += 10.0  # finding that no rows are left

    def predict(X: np.ndarray) -> np.ndarray:
        clock[0] += 100.0
        return X.reshape(len(X), -1)[:, :1]

    puts = []

    def put(seq, outputs, done) -> None:  # noqa: ANN001
        clock[0] += 1000.0
        puts.append((seq, outputs[0, 0], done))

    done, seconds = predict_chunks(monkeypatch, batches(), SimpleNamespace(predict=predict),
                                   SimpleNamespace(put=put, check=lambda: None), clock=lambda: clock[0])
    assert (done, puts) == (6, [(0, 0.0, 3), (1, 3.0, 6)])
    assert (seconds.reading, seconds.predicting) == (12.0, 200.0)


@pytest.mark.parametrize("stop", [False, True])
def test_a_chunk_goes_to_the_writer_once_the_next_batch_is_read(monkeypatch, stop: bool) -> None:  # noqa: ANN001
    """So that its store overlaps the next batch's products, not that batch's read. The last
    chunk goes when no batch is left; told to stop, the run still hands over the chunk it holds."""
    from types import SimpleNamespace  # noqa: PLC0415

    events: list[str] = []

    def batches():  # noqa: ANN202
        for first in range(4):
            events.append(f"read {first}")
            yield np.full((1, 6), first, np.float32)

    net = SimpleNamespace(predict=lambda X: X.reshape(len(X), -1)[:, :1])
    writer = SimpleNamespace(put=lambda seq, outputs, done: events.append(f"put {seq}"), check=lambda: None)
    done, _ = predict_chunks(monkeypatch, batches(), net, writer, should_stop=lambda: stop and events[-1] == "put 1")
    if not stop:
        assert (done, events) == (4, ["read 0", "read 1", "put 0", "read 2", "put 1", "read 3", "put 2", "put 3"])
    else:  # told to stop once batch 2 is read: chunk 1 still handed over, batch 2 not predicted
        assert (done, events) == (None, ["read 0", "read 1", "put 0", "read 2", "put 1"])


def test_a_writer_that_failed_ends_the_run_at_its_next_hand_over(monkeypatch) -> None:  # noqa: ANN001
    """The store of chunk 0 fails: the run raises that failure once the next batch is read and
    chunk 0 handed over (refused), and predicts no more batches."""
    from types import SimpleNamespace  # noqa: PLC0415

    events: list[str] = []

    def batches():  # noqa: ANN202
        for first in range(4):
            events.append(f"read {first}")
            yield np.full((1, 6), first, np.float32)

    def check() -> None:
        if "put 0" in events:
            raise RuntimeError("store failed")

    def predict(X: np.ndarray) -> np.ndarray:
        events.append("predict")
        return X.reshape(len(X), -1)[:, :1]

    writer = SimpleNamespace(put=lambda seq, outputs, done: events.append(f"put {seq}"), check=check)
    with pytest.raises(RuntimeError, match="store failed"):
        predict_chunks(monkeypatch, batches(), SimpleNamespace(predict=predict), writer)
    assert events == ["read 0", "predict", "read 1", "put 0"]


@pytest.mark.parametrize("writer_failed", [False, True])
def test_a_read_that_fails_still_hands_over_the_chunk_held(monkeypatch, writer_failed: bool) -> None:  # noqa: ANN001
    """The read after the first batch raises: the first chunk is stored all the same (a retry
    reads on after it, none recomputed), then the read's error goes on. A writer that has failed
    already is not given it, and the read's error is still the one raised."""
    import contextlib  # noqa: PLC0415
    from types import SimpleNamespace  # noqa: PLC0415

    def batches():  # noqa: ANN202
        yield np.full((3, 6), 1.0, np.float32)
        raise OSError("dataset chunk unreadable")

    stored = []
    writer = chunk_writer(monkeypatch, lambda _settings: contextlib.nullcontext("connection"),
                          lambda _c, _j, seq, outputs, rows_done: stored.append((seq, outputs[0, 0], rows_done)) or True)
    if writer_failed:
        writer.failure = RuntimeError("store failed")
    net = SimpleNamespace(predict=lambda X: X.reshape(len(X), -1)[:, :1])
    try:
        with pytest.raises(OSError, match="unreadable"):
            predict_chunks(monkeypatch, batches(), net, writer)
    finally:
        assert finishes(writer.close)
    assert stored == ([] if writer_failed else [(0, 1.0, 3)])


def finishes(action, timeout_s: float = 10.0) -> bool:  # noqa: ANN001
    """Whether `action()` returns within `timeout_s` (a put or close() waiting forever does not)."""
    import threading  # noqa: PLC0415

    thread = threading.Thread(target=action, daemon=True)
    thread.start()
    thread.join(timeout_s)
    return not thread.is_alive()


def chunk_writer(monkeypatch, connection_factory, record_chunk):  # noqa: ANN001, ANN201
    from types import SimpleNamespace  # noqa: PLC0415

    from worker import prediction_store  # noqa: PLC0415
    from worker.prediction_runner import ChunkWriter  # noqa: PLC0415

    monkeypatch.setattr(prediction_store, "chunk_connection", connection_factory)
    monkeypatch.setattr(prediction_store, "record_chunk", record_chunk)
    writer = ChunkWriter(SimpleNamespace(), SimpleNamespace(id="p"), depth=2)
    writer.start()
    return writer


@pytest.mark.parametrize("outcome", ["fails", "lost"])
def test_after_a_chunk_fails_or_is_refused_the_writer_stores_no_more_and_no_put_waits(monkeypatch,  # noqa: ANN001
                                                                                      outcome: str) -> None:
    """The first chunk's store fails (or finds the prediction taken over) while two more wait in
    the full queue: those are taken off unstored, close() returns, check() says why."""
    import contextlib  # noqa: PLC0415
    import threading  # noqa: PLC0415

    from worker.runner import JobAbandoned  # noqa: PLC0415

    release, stored = threading.Event(), []

    def first_store_ends_it(_connection, _job, seq, _outputs, _rows_done) -> bool:  # noqa: ANN001
        stored.append(seq)
        release.wait(10)
        if outcome == "fails":
            raise RuntimeError("disk full")
        return False

    writer = chunk_writer(monkeypatch, lambda _settings: contextlib.nullcontext("connection"), first_store_ends_it)
    for seq in range(3):  # the writer holds chunk 0; 1 and 2 fill the queue
        assert finishes(lambda seq=seq: writer.put(seq, np.zeros((3, 1)), 3 * (seq + 1)))
    release.set()
    assert finishes(writer.close)  # close()'s None needs the room the writer makes
    with pytest.raises(RuntimeError if outcome == "fails" else JobAbandoned):
        writer.check()
    assert stored == [0]


def test_a_writer_whose_connection_failed_takes_the_chunks_put_and_raises_the_failure(monkeypatch) -> None:  # noqa: ANN001
    """chunk_connection fails before any chunk is stored, after the predicting thread filled the
    queue: the writer still takes every chunk off (none stored) and close() returns."""
    import contextlib  # noqa: PLC0415
    import threading  # noqa: PLC0415

    release, stored = threading.Event(), []

    @contextlib.contextmanager
    def unreachable(_settings):  # noqa: ANN001, ANN202
        release.wait(10)
        raise RuntimeError("no database")
        yield  # a context manager that never yields

    writer = chunk_writer(monkeypatch, unreachable, lambda *args: stored.append(args) or True)
    for seq in range(2):  # the queue is full
        assert finishes(lambda seq=seq: writer.put(seq, np.zeros((3, 1)), 3 * (seq + 1)))
    release.set()
    assert finishes(writer.close)
    with pytest.raises(RuntimeError, match="no database"):
        writer.check()
    assert stored == []


def test_a_writer_whose_connection_fails_to_close_keeps_its_stores_and_raises_the_failure(monkeypatch) -> None:  # noqa: ANN001
    """Every chunk is stored, then giving the connection back fails (after close()'s None was
    taken): close() returns without waiting for another None, and check() says why."""
    import contextlib  # noqa: PLC0415

    @contextlib.contextmanager
    def fails_on_return(_settings):  # noqa: ANN001, ANN202
        yield "connection"
        raise RuntimeError("connection lost on close")

    stored = []
    writer = chunk_writer(monkeypatch, fails_on_return, lambda _c, _j, seq, _o, _r: stored.append(seq) or True)
    for seq in range(3):
        assert finishes(lambda seq=seq: writer.put(seq, np.zeros((3, 1)), 3 * (seq + 1)))
    assert finishes(writer.close)
    with pytest.raises(RuntimeError, match="lost on close"):
        writer.check()
    assert stored == [0, 1, 2]
