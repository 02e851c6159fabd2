"""Which OpenBLAS kernels NumPy uses, chosen before NumPy loads.

OpenBLAS reads OPENBLAS_CORETYPE once, when it is loaded. On AMD Zen 4 (family 0x19 with AVX-512)
it picks its AVX-512 "SkylakeX" kernels, but Zen 4 runs 512-bit instructions as two 256-bit
halves, and on this project's machines its AVX2 "Haswell" kernels did better for float32:
`python -m bench blas` (2026-11-30 19:54 UTC, a 2-core Zen 4) measured the dense forward product
`x @ W.T` 1.18x faster, the other products of a training step 1.02-1.05x, a whole MLP epoch 1.08x;
float64 products between 3% slower and 3% faster. `choose_kernels` sets OPENBLAS_CORETYPE=Haswell
on such a CPU, only when nobody set the variable and NumPy is not loaded yet; it imports nothing
that loads a BLAS. The `bps` commands and the `bench` package call it first thing, so that the
benchmarks measure what a worker runs; OPENBLAS_CORETYPE set in the environment always wins.

They also call `park_idle_threads`: OpenBLAS's idle threads otherwise spin for about 2**28 cycles
(a tenth of a second) after each product, holding cores that other processes on a shared machine
need. OPENBLAS_THREAD_TIMEOUT=20 lets them spin 2**20 cycles (about 0.4 ms: across the gaps inside
a training step and between steps, so that the products pay no wake-up; parked at once, OpenBLAS's
2-thread GEMM floor took 1.08x as long in `python -m bench threads`, 2026-11-30 19:52 UTC) and
then sleep (during evaluation, checkpoints and between jobs). `python -m bench threads` compares
it with 4 (sleep at once) and OpenBLAS's default (28). `python -m bench mlp --threads 2` (one
process per value, on 2026-11-30's Zen 5 before 09:16 UTC, commit bcd8191; the runs' times were
not recorded): engine / floor 1.24x at 14, 1.20x at 17, 1.17x at 20, 1.18x at 24, 1.17x at 28: 20
stays.
"""
from __future__ import annotations

import os
import sys
from collections.abc import MutableMapping

ZEN4_FAMILY = 0x19  # Zen 3 shares it but has no AVX-512, where OpenBLAS uses Haswell anyway
CPUINFO = "/proc/cpuinfo"
THREAD_TIMEOUT = "20"


def _cpu_fields(cpuinfo: str) -> dict[str, str]:
    """The first processor's "key: value" lines."""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        if not line.strip():
            break
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    return fields


def preferred_coretype(cpuinfo: str) -> str | None:
    """"Haswell" for an AMD Zen 4 CPU, else None (OpenBLAS's own choice)."""
    fields = _cpu_fields(cpuinfo)
    try:
        family = int(fields.get("cpu family", ""), 0)
    except ValueError:
        return None
    flags = fields.get("flags", "").split()
    amd_avx512 = fields.get("vendor_id") == "AuthenticAMD" and "avx512f" in flags and "avx2" in flags
    return "Haswell" if amd_avx512 and family == ZEN4_FAMILY else None


def choose_kernels(environ: MutableMapping[str, str] = os.environ, cpuinfo_path: str = CPUINFO) -> str | None:
    """Sets OPENBLAS_CORETYPE when it helps and still can; returns what it set, or None."""
    if "OPENBLAS_CORETYPE" in environ or "numpy" in sys.modules:
        return None
    try:
        with open(cpuinfo_path, encoding="utf-8", errors="replace") as file:
            coretype = preferred_coretype(file.read())
    except OSError:
        return None
    if coretype is not None:
        environ["OPENBLAS_CORETYPE"] = coretype
    return coretype


def park_idle_threads(environ: MutableMapping[str, str] = os.environ) -> str | None:
    """Sets OPENBLAS_THREAD_TIMEOUT when nobody set it and NumPy is not loaded yet; returns what
    it set, or None."""
    if "OPENBLAS_THREAD_TIMEOUT" in environ or "numpy" in sys.modules:
        return None
    environ["OPENBLAS_THREAD_TIMEOUT"] = THREAD_TIMEOUT
    return THREAD_TIMEOUT
