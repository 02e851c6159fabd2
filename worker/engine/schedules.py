"""Per-epoch learning-rate schedules with torch.optim.lr_scheduler's values.

    sched = make_schedule(spec["lr_schedule"], base_lr)
    lr = sched.lr                 # the rate for the coming epoch
    sched.step(epochs_done, metrics)  # after each epoch; metrics: {"loss": .., "val_loss": ..}

step: base * gamma ** (e // step_size); exponential: base * gamma ** e; cosine: eta_min +
(base - eta_min) * (1 + cos(pi * e / t_max)) / 2 (closed form); plateau = ReduceLROnPlateau
(mode min, relative threshold, cooldown 0): after more than `patience` epochs without a
relative improvement of `threshold`, lr = max(lr * factor, min_lr). A None metric (NaN) counts
as no improvement.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np


class Schedule:
    def __init__(self, cfg: dict[str, Any] | None, base_lr: float) -> None:
        self.cfg = cfg or {"type": "constant"}
        self.base_lr = base_lr
        self.lr = base_lr
        self.best = math.inf
        self.num_bad = 0

    def step(self, epochs_done: int, metrics: dict[str, Any]) -> None:
        kind, c, e = self.cfg["type"], self.cfg, epochs_done
        if kind == "step":
            self.lr = self.base_lr * c["gamma"] ** (e // c["step_size"])
        elif kind == "exponential":
            self.lr = self.base_lr * c["gamma"] ** e
        elif kind == "cosine":
            self.lr = c["eta_min"] + (self.base_lr - c["eta_min"]) * (1 + math.cos(math.pi * e / c["t_max"])) / 2
        elif kind == "plateau":
            self._plateau(metrics.get(c["monitor"]))

    def _plateau(self, value: float | None) -> None:
        c = self.cfg
        if value is not None and value < self.best * (1 - c["threshold"]):
            self.best, self.num_bad = value, 0
        else:
            self.num_bad += 1
        if self.num_bad > c["patience"]:
            new_lr = max(self.lr * c["factor"], c["min_lr"])
            if self.lr - new_lr > 1e-8:
                self.lr = new_lr
            self.num_bad = 0

    def state_arrays(self) -> dict[str, np.ndarray]:
        return {"lr": np.asarray(self.lr, np.float64), "best": np.asarray(self.best, np.float64),
                "num_bad": np.asarray(self.num_bad, np.int64)}

    def load_state_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        self.lr, self.best, self.num_bad = float(arrays["lr"]), float(arrays["best"]), int(arrays["num_bad"])


def make_schedule(cfg: dict[str, Any] | None, base_lr: float) -> Schedule:
    return Schedule(cfg, base_lr)
