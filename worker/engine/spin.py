"""A counter one thread raises and another waits for, first spinning outside the GIL.

batch_split hands a part to a helper thread and waits for it to end about eight times per CNN
step. Through locks, each hand-off wakes a sleeping thread: tens of µs on this project's VMs
(a lock ping-pong between two threads against a spinning one, timed by a script not kept). A `Signal`
waiter therefore watches the counter with atomic loads in a nogil Numba loop for up to
SPIN_LOADS loads (a fraction of a millisecond: the gaps between the splits of one step) and
only then sleeps on an Event; the raiser sets the Event only when the waiter said it sleeps
(sequentially consistent stores and loads on both sides, so no wake-up is lost).
"""
from __future__ import annotations

import threading

import numpy as np
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from worker.engine.kernel_jit import jit

SPIN_LOADS = 200_000
COUNT, SLEEPING = 0, 1


def _pointer(context, builder, aryty, array, index):  # noqa: ANN001, ANN202
    return cgutils.get_item_pointer(context, builder, aryty, context.make_array(aryty)(context, builder, array), [index])


@intrinsic
def _load(typingctx, cells, index):  # noqa: ANN001, ANN202, ARG001
    def codegen(context, builder, signature, args):  # noqa: ANN001, ANN202
        ptr = _pointer(context, builder, signature.args[0], args[0], args[1])
        return builder.load_atomic(ptr, ordering="seq_cst", align=8)
    return types.int64(cells, index), codegen


@intrinsic
def _store(typingctx, cells, index, value):  # noqa: ANN001, ANN202, ARG001
    def codegen(context, builder, signature, args):  # noqa: ANN001, ANN202
        ptr = _pointer(context, builder, signature.args[0], args[0], args[1])
        builder.store_atomic(args[2], ptr, ordering="seq_cst", align=8)
        return context.get_dummy_value()
    return types.void(cells, index, value), codegen


def _spin(cells, value, loads):
    for _ in range(loads):
        if _load(cells, 0) >= value:
            return True
    return False


def _get(cells, index):
    return _load(cells, index)


def _put(cells, index, value):
    _store(cells, index, value)


_SPIN, _GET, _PUT = jit(_spin), jit(_get), jit(_put)


class Signal:
    def __init__(self) -> None:
        self._cells = np.zeros(2, np.int64)
        self._event = threading.Event()

    def raise_to(self, value: int) -> None:
        _PUT(self._cells, COUNT, value)
        if _GET(self._cells, SLEEPING):
            self._event.set()

    def wait_for(self, value: int) -> None:
        """Returns once the counter is at least `value`."""
        if _SPIN(self._cells, value, SPIN_LOADS):
            return
        while True:
            _PUT(self._cells, SLEEPING, 1)
            if _GET(self._cells, COUNT) >= value:
                break
            self._event.wait()
            self._event.clear()
            if _GET(self._cells, COUNT) >= value:
                break
        _PUT(self._cells, SLEEPING, 0)


def warm_up() -> None:
    """Compiles, or loads from Numba's disk cache, the spin loops (a worker's parent, before it
    forks, as cpu_kernels.warm_up)."""
    cells = np.zeros(2, np.int64)
    _PUT(cells, COUNT, 1)
    _SPIN(cells, _GET(cells, COUNT), 1)
