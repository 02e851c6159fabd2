"""A worker SIGKILLed mid-job, and the same job delivered twice at once: the job is finished
by exactly one run at a time, each epoch is recorded once, and a takeover resumes from the
checkpoint (at most the epoch in progress is computed again)."""
from __future__ import annotations

import os
import signal
import threading

import pytest

from tests.faults.harness import (
    assert_each_epoch_once, epoch_rows, job_of, publish, quick_job, slow_job, wait_for, wait_terminal,
)
from worker import job_store
from worker.runner import run_job

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]
EPOCHS = 16


def worker_pid(worker_id: str) -> int:
    """`bps worker` names itself bps-<queues>-<pid>@<host>."""
    return int(worker_id.split("@")[0].rsplit("-", 1)[1])


def test_a_sigkilled_worker_costs_at_most_one_epoch_and_another_worker_finishes(fault_settings, workers):
    settings = fault_settings
    first, second = workers.start(), workers.start()
    job_id = slow_job(settings, epochs=EPOCHS)
    publish(settings, job_id)

    wait_for(lambda: len(epoch_rows(settings, job_id)) >= 2, 60, "epoch 2 to be recorded")
    owner = job_of(settings, job_id).worker_id
    victim = first if worker_pid(owner) == first.pid else second
    assert worker_pid(owner) == victim.pid
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait(timeout=10)
    recorded_when_killed = max(e for e, _ in epoch_rows(settings, job_id))
    checkpoint_when_killed = job_store.load_checkpoint_epoch(settings, job_id)

    statuses = wait_terminal(settings, [job_id], timeout=40, logs=workers.logs)
    job = job_of(settings, job_id)
    assert statuses[job_id] == "succeeded", (job.error, workers.logs())
    assert job.attempt == 2 and job.worker_id != owner and job.model_id
    rows = assert_each_epoch_once(settings, job_id, EPOCHS)
    first_run = [e for e, attempt in rows if attempt == 1]
    # The checkpoint is written with the epoch row: every epoch the killed run recorded is kept,
    # and the new run starts right after it (only the unfinished epoch is computed again).
    assert checkpoint_when_killed == recorded_when_killed == max(first_run) >= 2
    assert first_run == list(range(1, recorded_when_killed + 1))
    assert [e for e, attempt in rows if attempt == 2] == list(range(recorded_when_killed + 1, EPOCHS + 1))
    print(f"\nSIGKILL: killed after epoch {recorded_when_killed}; attempt 2 resumed at "
          f"{recorded_when_killed + 1}; epochs recorded {len(rows)}/{EPOCHS}, duplicated 0, recomputed <= 1")


def test_the_same_job_published_twice_to_two_workers_runs_once(fault_settings, workers):
    settings = fault_settings
    workers.start(), workers.start()
    job_id = quick_job(settings, epochs=5)
    publish(settings, job_id)
    publish(settings, job_id)

    assert wait_terminal(settings, [job_id], timeout=60)[job_id] == "succeeded", workers.logs()
    job = job_of(settings, job_id)
    assert job.attempt == 1
    assert epoch_rows(settings, job_id) == [(e, 1) for e in range(1, 6)]


def test_the_same_job_run_by_two_threads_at_once_is_trained_once(fault_settings):
    settings = fault_settings
    job_id = quick_job(settings, epochs=5)
    barrier = threading.Barrier(2)

    def deliver(worker_id: str) -> None:
        barrier.wait()
        run_job(job_id, settings=settings, worker_id=worker_id)

    threads = [threading.Thread(target=deliver, args=(f"w{i}",)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    job = job_of(settings, job_id)
    assert (job.status, job.attempt) == ("succeeded", 1)
    assert epoch_rows(settings, job_id) == [(e, 1) for e in range(1, 6)]


@pytest.mark.parametrize("concurrency", [1, 2])  # solo pool; prefork (the job runs in a child process)
def test_a_stopped_worker_hands_its_running_job_back_at_the_next_batch(fault_settings, workers, concurrency):
    settings = fault_settings
    worker = workers.start(concurrency=concurrency)
    job_id = slow_job(settings, epochs=200)
    publish(settings, job_id)
    wait_for(lambda: len(epoch_rows(settings, job_id)) >= 2, 60, "epoch 2 to be recorded")
    worker.send_signal(signal.SIGTERM)  # what `docker compose stop` and `down` send
    assert worker.wait(timeout=20) == 0, workers.logs()
    job = job_of(settings, job_id)
    assert (job.status, job.worker_id) == ("queued", None), (job.status, workers.logs())
    kept = [e for e, _ in epoch_rows(settings, job_id)]
    assert kept == list(range(1, len(kept) + 1)) and len(kept) < 200
