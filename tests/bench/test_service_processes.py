"""bench/service_processes.start: the child writes its output to the log, and the benchmark's
own process closes its handle on that file (no handle left open, no "unclosed file" warning)."""
from __future__ import annotations

import gc
import os
import warnings
from pathlib import Path

from bench.service_processes import start, stop


def open_paths() -> set[str]:
    paths = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            paths.add(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:  # the directory's own fd, closed by the time it is read
            pass
    return paths


def test_the_log_is_the_childs_alone(tmp_path: Path) -> None:
    log = tmp_path / "bps.log"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        process = start(["--help"], dict(os.environ), log)
        gc.collect()
    try:
        assert str(log) not in open_paths()
        assert not [w for w in caught if issubclass(w.category, ResourceWarning)], [str(w.message) for w in caught]
        assert process.wait(60) == 0
    finally:
        stop(process)
    assert b"usage" in log.read_bytes().lower()
