"""Early stopping (Keras semantics) and the vanishing/exploding-gradient warnings of a fit.

EarlyStopping: an epoch improves when the monitored value beats the best by more than
`min_delta` (lower for losses, higher for accuracies); after `patience` epochs in a row
without improvement training stops. With `restore_best`, the weights and buffers of the best
epoch are put back at the end of training (early stop or completed run).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from worker.engine.backend import to_numpy

VANISHING_RATIO = 1e-4  # a layer's gradient norm this far below the output layer's
EXPLODING_NORM = 1e4


class EarlyStopping:
    def __init__(self, cfg: dict[str, Any]) -> None:
        self.monitor = cfg["monitor"]
        self.patience = cfg["patience"]
        self.min_delta = cfg["min_delta"]
        self.restore_best = cfg["restore_best"]
        self.sign = -1.0 if self.monitor.endswith("accuracy") else 1.0  # minimise sign * value
        self.best = math.inf
        self.best_epoch: int | None = None
        self.wait = 0
        self.stopped = False  # the last update decided to stop (kept in the state: a resumed run stops too)
        self.best_state: dict[str, Any] = {}

    def update(self, epoch: int, record: dict[str, Any], net: Any) -> bool:
        """Records the epoch; True when training should stop now."""
        value = record.get(self.monitor)
        if value is not None and self.sign * value < self.best - self.min_delta:
            self.best, self.best_epoch, self.wait = self.sign * value, epoch, 0
            if self.restore_best:
                self.best_state = {k: v.copy() for k, v in net.state_dict().items()}
            return False
        self.wait += 1
        self.stopped = self.wait >= self.patience
        return self.stopped

    def restore(self, net: Any) -> None:
        state = net.state_dict()
        for name, saved in self.best_state.items():
            state[name][...] = saved

    def state_arrays(self) -> dict[str, np.ndarray]:
        out = {"best": np.asarray(self.best, np.float64), "wait": np.asarray(self.wait, np.int64),
               "best_epoch": np.asarray(-1 if self.best_epoch is None else self.best_epoch, np.int64),
               "stopped": np.asarray(self.stopped, np.bool_)}
        out.update({f"best_state/{k}": to_numpy(v).copy() for k, v in self.best_state.items()})
        return out

    def load_state_arrays(self, arrays: dict[str, np.ndarray], xp: Any) -> None:
        self.best, self.wait = float(arrays["best"]), int(arrays["wait"])
        self.best_epoch = int(arrays["best_epoch"]) if int(arrays["best_epoch"]) >= 0 else None
        self.stopped = bool(arrays.get("stopped", False))  # absent from checkpoints written before it
        prefix = "best_state/"
        self.best_state = {k[len(prefix):]: xp.asarray(v) for k, v in arrays.items() if k.startswith(prefix)}


def gradient_warnings(record: dict[str, Any], weight_names: list[str]) -> list[tuple[tuple[str, str], str]]:
    """((kind, param name), message) for one epoch's average gradient norms of the weight
    matrices; the caller reports each (kind, param) once, at the first epoch it is seen."""
    norms = record["grad_norms"]
    weights = [n for n in weight_names if n in norms]
    if not weights:
        return []
    out_name = weights[-1]
    out_norm = norms[out_name]
    warnings = []
    for name in weights:
        norm = norms[name]
        if norm is None or norm > EXPLODING_NORM:
            shown = "non-finite (inf/NaN)" if norm is None else f"{norm:.3g}"
            warnings.append((("exploding", name),
                             f"exploding gradients: {name} has gradient norm {shown} (from epoch {record['epoch']})"))
        elif name != out_name and out_norm and norm < VANISHING_RATIO * out_norm:
            warnings.append((("vanishing", name),
                             f"vanishing gradients: {name} has gradient norm {norm:.3g}, over "
                             f"{round(-math.log10(VANISHING_RATIO))} orders of magnitude below the output "
                             f"layer's {out_name} ({out_norm:.3g}) (from epoch {record['epoch']})"))
    return warnings
