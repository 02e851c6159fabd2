"""`python -m bench predictions` runs end to end on a small dataset (real `bps api` and
`bps worker` processes) and prints the ratio and the download's memory line (the figures
themselves are never asserted: speed is not a test)."""
from __future__ import annotations

import re

import pytest

from bench import bench_predictions

pytestmark = pytest.mark.slow


def test_prints_the_ratio_and_the_api_memory_during_the_download(capsys, monkeypatch):
    monkeypatch.setattr(bench_predictions, "WORKER_SETTLE_S", 0.0)  # nothing timed here: the POST may wait in the broker
    bench_predictions.main(["--rows", "3000", "--chunk-rows", "1000"])
    out = capsys.readouterr().out
    assert re.search(r"^service / engine: \d+\.\d+x rows/s", out, re.MULTILINE), out
    assert re.search(r"^CSV download: 3000 rows, .* RSS \d+ MiB before, peak \d+ MiB", out, re.MULTILINE), out


def test_a_steady_prediction_is_polled_a_few_times_and_seen_done_within_a_poll() -> None:
    """Each GET takes CPU from the worker: a 3 s prediction gets 8 (at a tenth of the time
    left it got 28), a long one about one a second, and the end is seen within 0.05 s."""
    for duration_s, most_polls in ((0.5, 3), (3.0, 10), (30.0, 40)):
        now_s, polls = 0.0, 0
        while now_s < duration_s:  # progress moves steadily from the POST to the end
            now_s += bench_predictions.poll_interval_s(now_s, now_s / duration_s)
            polls += 1
        assert polls <= most_polls and now_s - duration_s <= 0.05
