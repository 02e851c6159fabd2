"""`python -m bench predictions` runs end to end on a small dataset (real `bps api` and
`bps worker` processes) and prints the ratio and the download's memory line (the figures
themselves are never asserted: speed is not a test)."""
from __future__ import annotations

import re

import pytest

from bench import bench_predictions

pytestmark = pytest.mark.slow


def test_prints_the_ratio_and_the_api_memory_during_the_download(capsys):
    bench_predictions.main(["--rows", "3000", "--chunk-rows", "1000"])
    out = capsys.readouterr().out
    assert re.search(r"^service / engine: \d+\.\d+x rows/s", out, re.MULTILINE), out
    assert re.search(r"^CSV download: 3000 rows, .* RSS \d+ MiB before, peak \d+ MiB", out, re.MULTILINE), out
