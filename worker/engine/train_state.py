"""The training state beside the weights (optimizer, schedule, early stopping, epochs done): made
for a new fit, exported by `training_state()` as plain arrays, restored for `fit(resume=...)`."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from worker.engine.backend import to_numpy
from worker.engine.early_stopping import EarlyStopping
from worker.engine.optimizers import make_optimizer
from worker.engine.schedules import make_schedule


@dataclass
class TrainState:
    optimizer: Any
    schedule: Any
    early_stopping: EarlyStopping | None
    epochs_done: int = 0


def new_train_state(net: Any) -> TrainState:
    spec = net.spec
    es = EarlyStopping(spec["early_stopping"]) if spec["early_stopping"] else None
    return TrainState(make_optimizer(spec["optimizer"], net.params, flat=net.flat_params),
                      make_schedule(spec["lr_schedule"], spec["optimizer"]["learning_rate"]), es)


def training_state(net: Any) -> dict[str, np.ndarray]:
    """Everything `fit(resume=...)` needs, as plain numeric host arrays (for an .npz)."""
    st = net.train_state or new_train_state(net)
    out = {"epochs_done": np.asarray(st.epochs_done, np.int64)}
    out.update({f"param/{k}": to_numpy(v).copy() for k, v in net.params.items()})
    out.update({f"buffer/{k}": to_numpy(v).copy() for k, v in net.buffers.items()})
    out.update({f"opt/{k}": v for k, v in st.optimizer.state_arrays().items()})
    out.update({f"sched/{k}": v for k, v in st.schedule.state_arrays().items()})
    if st.early_stopping:
        out.update({f"es/{k}": v for k, v in st.early_stopping.state_arrays().items()})
    return out


def restore_train_state(net: Any, state: dict[str, np.ndarray]) -> TrainState:
    st = new_train_state(net)
    for prefix, arrays in (("param/", net.params), ("buffer/", net.buffers)):
        for k, v in arrays.items():
            v[...] = net.xp.asarray(state[prefix + k])
    sub = {p: {k[len(p):]: v for k, v in state.items() if k.startswith(p)} for p in ("opt/", "sched/", "es/")}
    st.optimizer.load_state_arrays(sub["opt/"])
    st.schedule.load_state_arrays(sub["sched/"])
    if st.early_stopping:
        st.early_stopping.load_state_arrays(sub["es/"], net.xp)
    st.epochs_done = int(state["epochs_done"])
    return st
