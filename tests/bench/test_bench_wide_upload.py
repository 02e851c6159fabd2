"""`python -m bench wide_upload` runs on a small width and prints its ratio and the list's size
(the figures themselves are never asserted: speed is not a test)."""
from __future__ import annotations

import re

from bench import bench_wide_upload


def test_prints_the_ratio_against_the_half_width_anchor(capsys):
    bench_wide_upload.main(["--columns", "400", "--repeat", "1"])
    out = capsys.readouterr().out
    assert re.search(r"^upload 1x200: \d+\.\d+ s \(anchor\); 1x400: \d+\.\d+ s; ratio \d+\.\d+", out, re.MULTILINE), out
    listed, detail = map(int, re.search(r"GET /v1/datasets: (\d+) bytes .* widest: (\d+) bytes", out).groups())
    assert listed < detail  # three summaries weigh less than one dataset's 400 profiles
