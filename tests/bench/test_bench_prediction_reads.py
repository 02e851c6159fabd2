"""`python -m bench prediction_reads` reads a small dataset mapped and unmapped, alternating,
and prints every run and the ratio (the figures themselves are never asserted: speed is not a
test); the split readers' map is put back after each run."""
from __future__ import annotations

import re

import pytest

from bench import bench_prediction_reads
from bps import prediction_rows

pytestmark = pytest.mark.slow


def test_prints_each_run_of_both_readers_and_the_ratio(capsys) -> None:  # noqa: ANN001
    split_map_bytes = prediction_rows.SPLIT_MMAP_BYTES
    bench_prediction_reads.main(["--rows", "3000", "--chunk-rows", "1000", "--runs", "2"])
    out = capsys.readouterr().out
    runs = re.findall(r"^run (\d) (unmapped|mapped) +\d+\.\d+ s \(user", out, re.MULTILINE)
    assert runs == [("1", "unmapped"), ("1", "mapped"), ("2", "unmapped"), ("2", "mapped")], out
    assert re.search(r"^3000 rows x 784 float32 .* unmapped / mapped: \d+\.\d+x$", out, re.MULTILINE), out
    assert prediction_rows.SPLIT_MMAP_BYTES == split_map_bytes > 0
