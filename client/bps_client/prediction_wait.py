"""Following an asynchronous prediction to its end: GET /v1/predictions/{id} at intervals that
grow as the client's retry backoff does (up to `poll_interval`), with an optional tqdm bar of
the rows predicted on stderr."""
from __future__ import annotations

import sys
import time
from typing import IO, Any

from bps_client.errors import PredictionFailed
from bps_client.transport import retry_delay

TERMINAL = ("succeeded", "failed")
MIN_POLL_S = 0.05


class RowBar:
    """rows predicted n/N, elapsed and ETA, from the Prediction's `progress` (0..1)."""

    def __init__(self, prediction: dict, file: IO[str] | None = None) -> None:
        from tqdm import tqdm  # noqa: PLC0415

        self.bar = tqdm(total=prediction.get("n") or None, desc=f"prediction {prediction['id'][:8]}", unit="row",
                        file=file or sys.stderr, mininterval=0, miniters=1, dynamic_ncols=True)

    def update(self, prediction: dict) -> None:
        done = round(float(prediction.get("progress") or 0.0) * (prediction.get("n") or 0))
        if prediction["status"] == "succeeded":
            done = prediction.get("n") or done
        self.bar.set_postfix_str(prediction["status"], refresh=False)
        self.bar.update(max(0, done - self.bar.n))

    def close(self) -> None:
        self.bar.close()


def wait_prediction(client: Any, prediction_id: str, *, progress: bool, timeout: float | None,
                    poll_interval: float) -> dict:
    """The final Prediction once succeeded; PredictionFailed once failed; TimeoutError past `timeout`."""
    deadline = None if timeout is None else time.monotonic() + timeout
    bar, attempt = None, 0
    try:
        while True:
            prediction = client.prediction(prediction_id)
            if progress:
                bar = bar or RowBar(prediction)
                bar.update(prediction)
            if prediction["status"] in TERMINAL:
                break
            delay = max(MIN_POLL_S, min(retry_delay(None, attempt, client.transport.backoff_s), poll_interval))
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"prediction {prediction_id} did not finish in time")
                delay = min(delay, left)
            time.sleep(delay)
            attempt += 1
    finally:
        if bar is not None:
            bar.close()
    if prediction["status"] != "succeeded":
        raise PredictionFailed(prediction)
    return prediction
