"""kernel_jit: how the fused CPU kernels are compiled."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

# A child process where Numba has no writable cache location (a read-only install, no home):
# there njit(cache=True) raises when a kernel is defined. It reports which of the kernels its
# modules hold were defined by njit without a cache, and the loss of one kernel compiled so.
WITHOUT_A_CACHE = """
import json, numba, numpy as np
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
from worker.engine import cpu_conv, cpu_gather, cpu_kernels, cpu_optimizer_steps, cpu_recurrent, spin
kernels = {id(kernel) for module in (cpu_conv, cpu_gather, cpu_kernels, cpu_optimizer_steps, cpu_recurrent, spin)
           for value in vars(module).values() for kernel in (value if isinstance(value, tuple) else (value,))
           if isinstance(kernel, numba.core.dispatcher.Dispatcher)}
logits, labels = np.array([[1.0, 2.0], [3.0, 0.0]], np.float32), np.array([1, 0])
loss, correct = cpu_kernels.softmax_cross_entropy(logits, labels, np.empty_like(logits), np.float32(0.5))
print(json.dumps({"kernels": len(kernels), "cached": len(kernels - uncached), "loss": float(loss), "correct": int(correct)}))
"""


def test_kernels_compile_without_a_writable_cache():
    """Every kernel is defined through jit's fallback (njit without a cache) and such a kernel
    compiles and runs. One is compiled, not all: a cache changes where compiled code is kept, not
    what compiles, and every kernel compiles with one in the other engine tests."""
    out = subprocess.run([sys.executable, "-c", WITHOUT_A_CACHE], capture_output=True, text=True, check=True).stdout
    report = json.loads(out)
    assert report["kernels"] >= 30 and report["cached"] == 0
    logits = np.array([[1.0, 2.0], [3.0, 0.0]])
    expected = np.mean(np.log(np.exp(logits).sum(axis=1)) - logits[[0, 1], [1, 0]])
    assert abs(report["loss"] - expected) < 1e-6 and report["correct"] == 2
