"""kernel_jit: how the fused CPU kernels are compiled."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

# A child process where Numba has no writable cache location (a read-only install, no home):
# there njit(cache=True) raises when a kernel is defined. It imports every module of worker.engine
# that mentions Numba or kernel_jit, finds every Numba dispatcher of ours that they defined (gc:
# wherever it is held), and reports how many, whether they are the ones the modules hold, how many
# were not defined by njit without a cache, and the loss of one kernel compiled so.
WITHOUT_A_CACHE = """
import gc, importlib, importlib.util, json, pkgutil, numba, numpy as np
real_njit, uncached = numba.njit, set()

def njit(*function, **flags):  # @njit (Numba's own use) or njit(**flags)(function) (kernel_jit's)
    if flags.get("cache"):
        raise RuntimeError("cannot cache function: no locator available")
    if function:
        return real_njit(*function, **flags)
    def define(function):
        kernel = real_njit(**flags)(function)
        uncached.add(id(kernel))
        return kernel
    return define

numba.njit = njit
import worker.engine
names = [module.name for module in pkgutil.walk_packages(worker.engine.__path__, "worker.engine.")]
modules = [importlib.import_module(name) for name in names
           if any(word in open(importlib.util.find_spec(name).origin).read() for word in ("numba", "kernel_jit"))]
Dispatcher = numba.core.dispatcher.Dispatcher
gc.collect()  # a dispatcher dropped but still in a reference cycle is not one the modules define
defined = {id(kernel) for kernel in gc.get_objects()
           if isinstance(kernel, Dispatcher) and kernel.py_func.__module__.startswith("worker.")}
held = {id(kernel) for module in modules for value in vars(module).values()
        for kernel in (value if isinstance(value, tuple) else (value,)) if isinstance(kernel, Dispatcher)}
from worker.engine import cpu_kernels
logits, labels = np.array([[1.0, 2.0], [3.0, 0.0]], np.float32), np.array([1, 0])
loss, correct = cpu_kernels.softmax_cross_entropy(logits, labels, np.empty_like(logits), np.float32(0.5))
print(json.dumps({"kernels": len(defined), "held": defined == held, "cached": len(defined - uncached),
                  "loss": float(loss), "correct": int(correct)}))
"""


def test_kernels_compile_without_a_writable_cache():
    """Every kernel is defined through jit's fallback (njit without a cache) and such a kernel
    compiles and runs. One is compiled, not all: a cache changes where compiled code is kept, not
    what compiles, and every kernel compiles with one in the other engine tests."""
    out = subprocess.run([sys.executable, "-c", WITHOUT_A_CACHE], capture_output=True, text=True, check=True).stdout
    report = json.loads(out)
    assert report["kernels"] > 0 and report["held"], "the kernels found are those the modules hold"
    assert report["cached"] == 0
    logits = np.array([[1.0, 2.0], [3.0, 0.0]])
    expected = np.mean(np.log(np.exp(logits).sum(axis=1)) - logits[[0, 1], [1, 0]])
    assert abs(report["loss"] - expected) < 1e-6 and report["correct"] == 2
