"""Following a job to its end: the server-sent event stream (reconnecting with Last-Event-ID),
else polling, with an optional tqdm progress bar on stderr."""
from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from typing import IO, Any

import httpx

from bps_client.errors import ApiError, JobFailed
from bps_client.transport import Transport, path_id, retry_delay, sse_events

TERMINAL = ("succeeded", "failed", "cancelled")
RECONNECTS = 5
# The stream sends a comment at least every 15 s: silence this long means a dead connection.
STREAM_READ_TIMEOUT_S = 60.0


def stream_events(transport: Transport, job_id: str, last_event_id: str | None,
                  read_timeout: float = STREAM_READ_TIMEOUT_S) -> Iterator[tuple[str, str | None, Any]]:
    headers = {"Accept": "text/event-stream", **({"Last-Event-ID": last_event_id} if last_event_id else {})}
    with transport.stream(f"/v1/jobs/{path_id(job_id)}/events", headers, read_timeout) as response:
        yield from sse_events(response.iter_lines())


def _number(value: Any) -> str:
    return "-" if value is None else f"{value:.4g}"


class EpochBar:
    """epoch n/N, loss, val_loss, accuracy, elapsed and ETA; redrawn on every epoch."""

    def __init__(self, job: dict, file: IO[str] | None = None) -> None:
        from tqdm import tqdm  # noqa: PLC0415

        self.bar = tqdm(total=job.get("epochs") or None, desc=f"job {job['id'][:8]}", unit="epoch",
                        file=file or sys.stderr, mininterval=0, miniters=1, dynamic_ncols=True,
                        bar_format="{desc} epoch {n_fmt}/{total_fmt} |{bar}| [{elapsed}<{remaining}{postfix}]")
        self.bar.set_postfix_str(job.get("status", ""), refresh=True)

    def epoch(self, epoch: dict) -> None:
        parts = [f"loss={_number(epoch.get('loss'))}", f"val_loss={_number(epoch.get('val_loss'))}"]
        if epoch.get("accuracy") is not None:
            parts.append(f"accuracy={_number(epoch['accuracy'])}")
        self.bar.set_postfix_str(" ".join(parts), refresh=False)
        self.bar.update(max(0, int(epoch["epoch"]) - self.bar.n))

    def status(self, job: dict) -> None:
        if job.get("epochs") and self.bar.total != job["epochs"]:
            self.bar.total = job["epochs"]
        if job["status"] in TERMINAL and not (self.bar.postfix or "").endswith(job["status"]):
            self.bar.set_postfix_str(f"{self.bar.postfix or ''} {job['status']}".strip(), refresh=True)

    def close(self) -> None:
        self.bar.close()


class Watcher:
    def __init__(self, client: Any, job_id: str, *, progress: bool, timeout: float | None,
                 poll_interval: float) -> None:
        self.client, self.job_id, self.poll_interval = client, job_id, poll_interval
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.progress, self.bar, self.last_epoch = progress, None, 0

    def run(self) -> dict:
        try:
            job = self._follow_stream() or self._poll()
        finally:
            if self.bar is not None:
                self.bar.close()
        if job["status"] != "succeeded":
            raise JobFailed(job)
        return job

    def _check_deadline(self) -> float:
        """The seconds left (at most STREAM_READ_TIMEOUT_S); TimeoutError when none are."""
        if self.deadline is None:
            return STREAM_READ_TIMEOUT_S
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"job {self.job_id} did not finish in time")
        return min(left, STREAM_READ_TIMEOUT_S)

    def _on_status(self, job: dict) -> None:
        if self.progress and self.bar is None:
            self.bar = EpochBar(job)
        if self.bar is not None:
            self.bar.status(job)

    def _on_epoch(self, epoch: dict) -> None:
        self.last_epoch = max(self.last_epoch, int(epoch["epoch"]))
        if self.progress and self.bar is None:  # a finished job's stream sends its epochs before its status
            self._on_status(self.client.job(self.job_id))
        if self.bar is not None:
            self.bar.epoch(epoch)

    def _follow_stream(self) -> dict | None:
        """The final Job from the event stream, or None where the stream is unavailable."""
        last_id, failures = None, 0
        while True:  # ends by the break after the last reconnect
            read_timeout = self._check_deadline()  # a stream silent past the deadline times out, then this raises
            try:
                for event, event_id, data in self.client.events(self.job_id, last_id, read_timeout):
                    last_id, failures = event_id or last_id, 0
                    if event == "epoch":
                        self._on_epoch(data)
                    elif event == "status":
                        self._on_status(data)
                        if data["status"] in TERMINAL:
                            return data
                    self._check_deadline()
            except ApiError as error:
                # no stream here (or none free now: 503): poll, from the last epoch seen
                if error.status != 503 and (error.status not in (404, 405, 501) or last_id is not None):
                    raise
                self.client.job(self.job_id)  # a missing job raises its 404 here
                return None
            except httpx.TransportError:
                self._check_deadline()
            if failures == RECONNECTS:  # no reconnect follows: poll at once
                break
            # the client's retry backoff, never past the caller's timeout
            time.sleep(min(retry_delay(None, failures, self.client.transport.backoff_s), self._check_deadline()))
            failures += 1
        return None

    def _poll(self) -> dict:
        while True:
            job = self.client.job(self.job_id)
            if self.bar is not None or self.progress:
                self._on_status(job)
                if job.get("epoch", 0) > self.last_epoch:
                    for epoch in self.client.epochs(self.job_id, since=self.last_epoch):
                        if epoch["epoch"] > self.last_epoch:  # a server without ?since= sends them all
                            self._on_epoch(epoch)
            if job["status"] in TERMINAL:
                return job
            self._check_deadline()
            time.sleep(self.poll_interval)
