"""bench/service_processes.start: the child writes its output to the log, and the benchmark's
own process closes its handle on that file itself (no "unclosed file" warning: CPython would
also free a forgotten handle at once, so only the warning tells the two apart)."""
from __future__ import annotations

import gc
import os
import warnings
from pathlib import Path

from bench.service_processes import start, stop


def test_the_log_is_the_childs_alone(tmp_path: Path) -> None:
    log = tmp_path / "bps.log"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        process = start(["--help"], dict(os.environ), log)
        gc.collect()
    try:
        assert not [w for w in caught if issubclass(w.category, ResourceWarning)], [str(w.message) for w in caught]
        assert process.wait(60) == 0
    finally:
        stop(process)
    assert b"usage" in log.read_bytes().lower()
