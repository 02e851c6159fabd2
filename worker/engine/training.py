"""The fit loop: mini-batches over epochs, validation, schedules, early stopping, checkpoints.

Validation rows are a `validation_split` fraction of X chosen by bps.splits: by default a seeded
random draw, stratified for classification; with `validation: "last"` the last rows (as Keras).
Each epoch's order is a permutation drawn from (seed, epoch) and dropout is reseeded
from (seed, epoch), so a run resumed from `training_state()` repeats the uninterrupted run.
Threads: `net.n_threads` (env BPS_BLAS_THREADS; unset: `threads.job_threads`) for both the BLAS
products and the parallel CPU kernels (`threads.thread_budget`), only for the duration of `fit`.
The reported training loss/accuracy are averages over the epoch's batches (training mode, l2 term
included), as Keras reports them.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bps.splits import split_problem, split_rows
from worker.engine.backend import to_numpy
from worker.engine.early_stopping import gradient_warnings
from worker.engine.gpu_step import GpuStep
from worker.engine.threads import job_threads, thread_budget
from worker.engine.train_state import TrainState, new_train_state, restore_train_state, training_state

__all__ = ["History", "TrainState", "fit", "new_train_state", "split_validation", "training_state"]

EVAL_CHUNK = 1024

@dataclass
class History:
    epochs: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    stop_reason: str = "completed"
    diverged_epoch: int | None = None
    best_epoch: int | None = None


def _finite(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def split_validation(net: Any, Xd: Any, yd: Any) -> tuple[Any, Any, Any, Any]:
    """(X, y, X_val, y_val) on the device, split as bps.splits says for the spec."""
    split = net.spec["validation_split"]
    problem = split_problem(Xd.shape[0], split)
    if problem:
        raise ValueError(problem)
    # A spec normalised before the `validation` field existed was split the Keras way.
    mode = net.spec.get("validation", "last")
    labels = None
    if net.loss.from_logits and (yd.ndim == 1 or yd.shape[1] == 1):
        labels = to_numpy(yd).reshape(-1)
    train_rows, val_rows = split_rows(Xd.shape[0], split, mode=mode, seed=net.seed, labels=labels)
    if mode == "last" or val_rows.size == 0:
        n_train = train_rows.size
        return Xd[:n_train], yd[:n_train], Xd[n_train:], yd[n_train:]
    xp = net.xp
    train_rows, val_rows = xp.asarray(train_rows), xp.asarray(val_rows)
    return (xp.take(Xd, train_rows, axis=0), xp.take(yd, train_rows, axis=0),
            xp.take(Xd, val_rows, axis=0), xp.take(yd, val_rows, axis=0))


def fit(net: Any, X: Any, y: Any, on_epoch: Callable | None = None, should_stop: Callable | None = None,
        resume: dict[str, np.ndarray] | None = None, on_batch: Callable | None = None) -> History:
    """`should_stop()` is asked before every batch: True stops training there, and the network
    keeps the weights of the last completed epoch (or the best one, with restore_best).
    `on_batch(epoch, batches_done, batches_per_epoch)` is told after every batch."""
    net.ensure_built(X, y)
    Xd, yd = net.inputs(X), net.targets(y)
    if Xd.shape[0] != yd.shape[0]:
        raise ValueError(f"X has {Xd.shape[0]} rows but y has {yd.shape[0]}")
    parts = split_validation(net, Xd, yd)
    del Xd, yd  # the split parts are copies (shuffled split): the whole arrays can go
    net.train_state = restore_train_state(net, resume) if resume is not None else new_train_state(net)
    # overflow on the way to a NaN loss is reported as divergence, not as NumPy warnings
    threads = net.n_threads or job_threads()
    with thread_budget(threads, kernels=net.xp is np), np.errstate(over="ignore", invalid="ignore"):
        return _Loop(net, *parts).run(on_epoch, should_stop, on_batch)


class _Loop:
    def __init__(self, net: Any, X: Any, y: Any, X_val: Any, y_val: Any) -> None:
        self.net, self.xp, self.spec, self.st = net, net.xp, net.spec, net.train_state
        self.X, self.y, self.X_val, self.y_val = X, y, X_val, y_val
        self.classification = net.loss.from_logits
        self.names = list(net.params)
        self.history = History()
        self.warned: set[tuple[str, str]] = set()  # (kind, param name) already reported
        self._xb: Any = None  # the batch buffers, reused every step (CPU)
        self._yb: Any = None
        self._epoch_start: tuple[Any, dict[str, Any]] | None = None  # weights before the epoch in progress
        self._gpu = GpuStep(net, self.spec["batch_size"]) if net.xp is not np else None  # fused CUDA step
        self._gather_rows: Callable | None = None  # the CPU batch gather, looked up once per fit
        if net.xp is np:  # imported here: it loads Numba, which prediction never does (test_cpu_kernels)
            from worker.engine.cpu_gather import gather_rows  # noqa: PLC0415

            self._gather_rows = gather_rows

    def run(self, on_epoch: Callable | None, should_stop: Callable | None, on_batch: Callable | None) -> History:
        hist, st = self.history, self.st
        last = self.spec["epochs"]
        if st.early_stopping and st.early_stopping.stopped:  # resumed after the epoch that decided to stop
            hist.stop_reason, last = "early_stopping", st.epochs_done
        for epoch in range(st.epochs_done + 1, last + 1):
            record = self._epoch(epoch, should_stop, on_batch)
            if record is None:
                hist.stop_reason = "cancelled"
                self._roll_back()
                break
            hist.epochs.append(record)
            for key, message in gradient_warnings(record, self.net.l2_names):
                if key not in self.warned:
                    self.warned.add(key)
                    hist.warnings.append(message)
            if record["loss"] is None:
                hist.stop_reason, hist.diverged_epoch = "diverged", epoch
            else:
                st.schedule.step(epoch, record)
                if st.early_stopping and st.early_stopping.update(epoch, record, self.net):
                    hist.stop_reason = "early_stopping"
            st.epochs_done = epoch
            if on_epoch is not None:
                on_epoch(record)
            if hist.stop_reason != "completed":
                break
        es = st.early_stopping
        if es and es.restore_best and hist.stop_reason in ("completed", "early_stopping", "cancelled"):
            es.restore(self.net)
        hist.best_epoch = es.best_epoch if es else _best_epoch(hist.epochs)
        return hist

    def _order(self, epoch: int) -> Any:
        n = self.X.shape[0]
        if not self.spec["shuffle"]:
            return None
        perm = np.random.default_rng([self.net.seed, epoch]).permutation(n)
        return self.xp.asarray(perm)

    def _keep_epoch_start(self) -> None:
        """A copy of the weights and buffers before this epoch: a stop inside it rolls back to them."""
        net = self.net
        if self._epoch_start is None:
            self._epoch_start = (net.flat_params.copy(), {k: v.copy() for k, v in net.buffers.items()})
            return
        params, buffers = self._epoch_start
        params[...] = net.flat_params
        for name, value in net.buffers.items():
            buffers[name][...] = value

    def _roll_back(self) -> None:
        if self._epoch_start is not None:
            params, buffers = self._epoch_start
            self.net.flat_params[...] = params
            for name, value in self.net.buffers.items():
                value[...] = buffers[name]

    def _epoch(self, epoch: int, should_stop: Callable | None, on_batch: Callable | None) -> dict[str, Any] | None:
        start_time, xp, net = time.perf_counter(), self.xp, self.net
        self._keep_epoch_start()
        lr = self.st.schedule.lr
        for layer in net.layers:
            if hasattr(layer, "rng"):
                seed = [net.seed, epoch, layer.index] if xp is np else (net.seed * 1_000_003 + epoch) * 1009 + layer.index
                layer.rng = xp.random.default_rng(seed)  # CuPy's default_rng takes one int
        order, n, bs = self._order(epoch), self.X.shape[0], self.spec["batch_size"]
        sums, n_batches = self.new_sums(), -(-n // bs)
        for start in range(0, n, bs):
            if should_stop is not None and should_stop():
                return None
            xb, yb = self._batch(order, start, min(start + bs, n))
            value = self._step(xb, yb, lr, sums)
            if on_batch is not None:
                on_batch(epoch, start // bs + 1, n_batches)
            if xp is np and not math.isfinite(value):
                break  # on CPU the check is free; on a GPU the epoch's sum reports it
        steps = max(sums["steps"], 1)
        total_loss = float(sums["loss"])
        loss = _finite(total_loss / n) if math.isfinite(total_loss) else None
        record = {"epoch": epoch, "loss": loss, "val_loss": None, "accuracy": None, "val_accuracy": None}
        if self.classification:
            record["accuracy"] = _finite(sums["correct"] / n) if loss is not None else None
        if loss is not None and self.X_val.shape[0]:
            record["val_loss"], record["val_accuracy"] = self._evaluate()
        record["duration_s"] = time.perf_counter() - start_time
        record["learning_rate"] = lr
        norm_sums = to_numpy(sums["norms"]) / steps
        record["grad_norms"] = {k: _finite(v) for k, v in zip(self.names, norm_sums, strict=True)}
        return record

    def new_sums(self) -> dict[str, Any]:
        """What `_step` adds to over an epoch. The sums stay on the device (0-d arrays): no host
        sync inside the batch loop on a GPU."""
        xp, n = self.xp, len(self.names)
        if self._gpu is not None:
            return self._gpu.new_sums()
        return {"loss": 0.0, "correct": 0.0, "steps": 0, "norms": xp.zeros(n, np.float64),
                "squares": xp.empty(n, np.float64)}

    def _batch(self, order: Any, start: int, stop: int) -> tuple[Any, Any]:
        if order is None:
            return self.X[start:stop], self.y[start:stop]
        if self.xp is not np:
            return self._gpu.batch(self.X, self.y, order, start, stop)
        idx = order[start:stop]
        if self._xb is None:
            bs = self.spec["batch_size"]
            self._xb, self._yb = (np.empty((bs, *a.shape[1:]), a.dtype) for a in (self.X, self.y))
        m, gather_rows = stop - start, self._gather_rows
        return gather_rows(self.X, idx, self._xb[:m]), gather_rows(self.y, idx, self._yb[:m])

    def _step(self, xb: Any, yb: Any, lr: float, sums: dict) -> Any:
        """One optimizer step on a batch; adds to `sums` on the device, returns the loss (0-d)."""
        net, xp, m = self.net, self.xp, xb.shape[0]
        if self._gpu is not None:
            self._gpu.step(xb, yb, lr, sums, self.spec["gradient_clip_norm"])
            return sums["loss"]
        out = net.forward(xb, True)
        value, grad, correct = net.loss.value_grad_correct(out, yb)
        if correct is not None:
            sums["correct"] += correct
        grads = net.backward(grad)
        value = net.add_l2(grads, value)
        sums["loss"] += value * m
        sums["steps"] += 1
        squares, clip, optimizer = sums["squares"], self.spec["gradient_clip_norm"], self.st.optimizer
        if clip is None and xp is np and optimizer.fusable:
            optimizer.fused_step(net.flat_grads, lr, net.flat_bounds, squares)  # norms in the same pass
        else:
            for k, name in enumerate(self.names):
                flat = grads[name].reshape(-1)
                squares[k] = xp.dot(flat, flat)  # a 0-d device array: no host sync on CuPy
            if clip is not None:
                coef = xp.minimum(clip / (xp.sqrt(squares.sum()) + 1e-6), 1.0).astype(net.dtype)
                net.flat_grads *= coef
            optimizer.step(grads, lr, flat_grads=net.flat_grads)
        sums["norms"] += xp.sqrt(squares)
        return value

    def _evaluate(self) -> tuple[float | None, float | None]:
        net, total, correct = self.net, 0.0, 0.0
        n = self.X_val.shape[0]
        for start in range(0, n, EVAL_CHUNK):
            xb, yb = self.X_val[start:start + EVAL_CHUNK], self.y_val[start:start + EVAL_CHUNK]
            out = net.forward(xb, False)
            total += float(net.loss.value(out, yb)) * xb.shape[0]
            if self.classification:
                correct += float(net.loss.correct(out, yb))
        return _finite(total / n), (_finite(correct / n) if self.classification else None)


def _best_epoch(epochs: list[dict[str, Any]]) -> int | None:
    key = "val_loss" if any(r["val_loss"] is not None for r in epochs) else "loss"
    scored = [(r[key], r["epoch"]) for r in epochs if r[key] is not None]
    return min(scored)[1] if scored else None
