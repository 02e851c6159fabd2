"""A run's progress inside an epoch and its pace: what the heartbeat writes to the job
(`progress`, `eta_s`) between epochs, without a database write per batch."""
from __future__ import annotations

import time


class Progress:
    """Fed by the engine's `on_batch(epoch, batches_done, batches_per_epoch)` hook (a few
    attribute writes per batch); read by the run watcher thread."""

    def __init__(self, total_epochs: int, epochs_done: int = 0) -> None:
        self.total_epochs = max(int(total_epochs), 1)
        self.fraction = self.start_fraction = min(epochs_done / self.total_epochs, 1.0)
        self.started = time.monotonic()

    def on_batch(self, epoch: int, batches_done: int, batches_per_epoch: int) -> None:
        self.fraction = min((epoch - 1 + batches_done / batches_per_epoch) / self.total_epochs, 1.0)

    def eta_s(self) -> float | None:
        """Seconds left at this run's pace so far (all epochs; early stopping may end sooner);
        None until a batch of this run is done."""
        gained = self.fraction - self.start_fraction
        if gained <= 0:
            return None
        return (time.monotonic() - self.started) / gained * (1.0 - self.fraction)
