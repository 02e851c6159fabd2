"""bps.openblas: the AVX2 kernels on AMD Zen 4, OpenBLAS's own choice everywhere else, never
over a user's OPENBLAS_CORETYPE, and never once NumPy is loaded (it would be too late)."""
from __future__ import annotations

import json
import platform
import subprocess
import sys

import numpy  # noqa: F401  (loaded, as in any test run: too late to choose for this process)
import pytest

from bps.openblas import choose_kernels, park_idle_threads, preferred_coretype


def cpuinfo(vendor: str, family: int, flags: str) -> str:
    second = "processor\t: 1\nvendor_id\t: Other\n"
    return (f"processor\t: 0\nvendor_id\t: {vendor}\ncpu family\t: {family}\nmodel\t\t: 17\n"
            f"flags\t\t: fpu sse2 avx avx2 fma {flags}\n\n{second}")


@pytest.mark.parametrize(("text", "expected"), [
    (cpuinfo("AuthenticAMD", 25, "avx512f avx512bw"), "Haswell"),  # Zen 4
    ("vendor_id: AuthenticAMD\ncpu family: 25\nflags: avx512f\n", None),  # no AVX2: Haswell kernels cannot run
    (cpuinfo("AuthenticAMD", 25, ""), None),  # Zen 3: no AVX-512, OpenBLAS picks Haswell itself
    (cpuinfo("AuthenticAMD", 26, "avx512f"), None),  # Zen 5: full-width AVX-512, not measured
    (cpuinfo("GenuineIntel", 6, "avx512f"), None),  # Intel AVX-512 runs SkylakeX kernels well
    ("", None),
    ("vendor_id: AuthenticAMD\ncpu family: lots\nflags: avx512f\n", None),
])
def test_preferred_coretype(text, expected):
    assert preferred_coretype(text) == expected


def test_a_users_choice_and_a_loaded_numpy_are_left_alone(tmp_path):
    path = tmp_path / "cpuinfo"
    path.write_text(cpuinfo("AuthenticAMD", 25, "avx512f"))
    environ = {"OPENBLAS_CORETYPE": "SkylakeX"}
    assert choose_kernels(environ, str(path)) is None and environ == {"OPENBLAS_CORETYPE": "SkylakeX"}
    assert "numpy" in sys.modules  # this test process: too late to choose
    environ = {}
    assert choose_kernels(environ, str(path)) is None and environ == {}
    assert choose_kernels({}, str(tmp_path / "missing")) is None


@pytest.mark.skipif(platform.machine() != "x86_64", reason="the Haswell kernels need an x86-64 CPU")
def test_a_fresh_process_loads_numpy_with_the_chosen_kernels(tmp_path):
    with open("/proc/cpuinfo", encoding="utf-8") as file:
        if "avx2" not in file.read().split():
            pytest.skip("this CPU has no AVX2: OpenBLAS's Haswell kernels cannot run here")
    path = tmp_path / "cpuinfo"
    path.write_text(cpuinfo("AuthenticAMD", 25, "avx512f"))
    code = ("import json, os, sys; from bps.openblas import choose_kernels; "
            f"chosen = choose_kernels(os.environ, {str(path)!r}); import numpy; "
            "from threadpoolctl import threadpool_info; "
            "print(json.dumps([chosen, [i.get('architecture') for i in threadpool_info() if i['user_api'] == 'blas']]))")
    env = {k: v for k, v in __import__("os").environ.items() if k != "OPENBLAS_CORETYPE"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    chosen, architectures = json.loads(out.strip().splitlines()[-1])
    assert chosen == "Haswell" and architectures[0] == "Haswell"


def test_idle_threads_parked_unless_set_or_too_late():
    environ: dict[str, str] = {}
    assert "numpy" in sys.modules  # this test process: too late
    assert park_idle_threads(environ) is None and environ == {}
    code = ("import os; from bps.openblas import park_idle_threads; print(park_idle_threads(os.environ), "
            "os.environ['OPENBLAS_THREAD_TIMEOUT'])")
    env = {k: v for k, v in __import__("os").environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    assert out.split() == ["20", "20"]
    env["OPENBLAS_THREAD_TIMEOUT"] = "4"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    assert out.split() == ["None", "4"]
