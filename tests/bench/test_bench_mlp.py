"""`make bench`'s MLP benchmark runs end to end and prints the issue's three ratios (a smoke run on
10,000 rows; the figures themselves are never asserted: speed is not a test)."""
from __future__ import annotations

import re

from bench import bench_mlp


def test_prints_the_three_ratios_and_the_blas_in_use(capsys):
    bench_mlp.main(["--quick", "--repeats", "1", "--threads", "1"])
    out = capsys.readouterr().out
    assert "NumPy's BLAS: " in out
    for label in ("engine / floor", "pytorch / engine", "scikit-learn / engine"):
        assert re.search(rf"^{re.escape(label)}\s+\d+\.\d+x", out, re.MULTILINE), (label, out)
