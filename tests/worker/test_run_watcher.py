"""The run's one watcher thread (worker/runner.py RunWatcher): it heartbeats, polls the cancel
flag, and copies the worker's SHUTDOWN into the run's stop event, so that the per-batch
should_stop reads memory only."""
from __future__ import annotations

import threading
from dataclasses import replace
from types import SimpleNamespace

import pytest

from worker import runner
from worker.runner import RunControl, RunWatcher

JOB = SimpleNamespace(id="job-1", attempt=2)


class Reads:
    """A beat or poll function: records its calls, answers (owned, cancel_requested)."""

    def __init__(self, answer: tuple[bool, bool] = (True, False)) -> None:
        self.calls: list[tuple[str, int]] = []
        self.answer = answer
        self.called = threading.Event()

    def __call__(self, settings, job_id: str, attempt: int) -> tuple[bool, bool]:  # noqa: ANN001
        self.calls.append((job_id, attempt))
        self.called.set()
        return self.answer


@pytest.fixture
def fast(settings):  # noqa: ANN001
    return replace(settings, heartbeat_interval_s=0.05, cancel_poll_interval_s=0.01)


def watch(settings, control: RunControl, beat: Reads, poll: Reads | None = None) -> RunWatcher:  # noqa: ANN001
    watcher = RunWatcher(settings, JOB, control, beat=beat, poll=poll)
    watcher.start()
    return watcher


def stop_watching(watcher: RunWatcher) -> None:
    watcher.done.set()
    watcher.join(timeout=10)
    assert not watcher.is_alive()


def test_should_stop_reads_no_process_shared_state(monkeypatch):
    control = RunControl(time_limit_s=60)

    class Unreadable:
        def is_set(self) -> bool:
            raise AssertionError("the per-batch check read SHUTDOWN")

    monkeypatch.setattr(runner, "SHUTDOWN", Unreadable())
    assert control.should_stop() is False
    control.stop.set()
    assert control.should_stop() is True


def test_a_worker_shutdown_reaches_the_run_through_the_watcher(fast):
    control, beat = RunControl(time_limit_s=60), Reads()
    watcher = watch(fast, control, beat)
    try:
        assert beat.called.wait(10)  # the watcher runs, and the run goes on
        assert not control.should_stop()
        runner.SHUTDOWN.set()
        assert control.stop.wait(10)
    finally:
        runner.SHUTDOWN.clear()
        stop_watching(watcher)
    assert control.should_stop() and not control.cancel_requested and not control.lost
    assert set(beat.calls) == {("job-1", 2)}


def test_a_shutdown_before_the_run_starts_stops_it_at_once():
    runner.SHUTDOWN.set()
    try:
        assert RunControl(time_limit_s=60).should_stop()
    finally:
        runner.SHUTDOWN.clear()


def test_a_polled_cancel_stops_the_run_and_polling_ends(fast):
    slow_beat = replace(fast, heartbeat_interval_s=3600)  # only the poll can see the cancel
    control, beat, poll = RunControl(time_limit_s=60), Reads(), Reads((True, True))
    watcher = watch(slow_beat, control, beat, poll)
    try:
        assert control.stop.wait(10)
    finally:
        stop_watching(watcher)
    assert control.cancel_requested and not control.lost
    assert poll.calls == [("job-1", 2)] and beat.calls == []  # no poll once the run is stopping


def test_a_job_taken_over_is_seen_by_the_heartbeat_and_marks_the_run_lost(fast):
    control, beat = RunControl(time_limit_s=60), Reads((False, False))
    watcher = watch(fast, control, beat)
    try:
        assert control.stop.wait(10)
    finally:
        stop_watching(watcher)
    assert control.lost and not control.cancel_requested and beat.calls[0] == ("job-1", 2)


def test_a_failing_heartbeat_is_retried_and_training_goes_on(fast, caplog):
    calls = []

    def broken(settings, job_id: str, attempt: int) -> tuple[bool, bool]:  # noqa: ANN001
        calls.append(job_id)
        if len(calls) >= 3:
            done.set()
        raise ConnectionError("database unreachable")

    done, control = threading.Event(), RunControl(time_limit_s=60)
    watcher = watch(fast, control, broken)
    try:
        assert done.wait(10)
    finally:
        stop_watching(watcher)
    assert not control.should_stop() and "job job-1: heartbeat failed" in caplog.text
