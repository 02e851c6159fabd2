"""The read alone of `python -m bench predictions`: its .npz of 1,000,000 rows x 784 float32
(3 GB in SQLite chunks) read through bps.prediction_rows.read_ahead in its batches, as the
worker reads it but with nothing else running, with the split readers' memory map of the
database file (SPLIT_MMAP_BYTES) and without it (0: every page read into SQLite's page cache
first), alternating. Each run is a fresh read (new connections, a new map); the file is in
the OS's page cache (a read before the runs).

`python -m bench prediction_reads [--rows N] [--chunk-rows N] [--runs N]`.
"""
from __future__ import annotations

import resource
import statistics
import tempfile
import time
from pathlib import Path

from bench.bench_predictions import FEATURES, make_rows, store_model_and_dataset, workload_parser
from bench.service_processes import setup


def timed_read(database_url: str, dataset_id: str, chunk_rows: int, mmap_bytes: int) -> tuple[float, float, float, int]:
    """(wall s, user s, system s, page faults) of one read of every row."""
    from bps import prediction_rows

    saved, prediction_rows.SPLIT_MMAP_BYTES = prediction_rows.SPLIT_MMAP_BYTES, mmap_bytes
    try:
        before, start_s = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        for _batch in prediction_rows.read_ahead(database_url, dataset_id, "npz", chunk_rows):
            pass
        wall_s, after = time.perf_counter() - start_s, resource.getrusage(resource.RUSAGE_SELF)
    finally:
        prediction_rows.SPLIT_MMAP_BYTES = saved
    return (wall_s, after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime,
            after.ru_minflt - before.ru_minflt)


def main(argv: list[str]) -> None:
    from bps.prediction_rows import SPLIT_MMAP_BYTES

    parser = workload_parser("python -m bench prediction_reads")
    parser.add_argument("--runs", type=int, default=5)
    args, _ = parser.parse_known_args(argv)
    with tempfile.TemporaryDirectory(prefix="bps-bench-prediction-reads-") as name:
        tmp = Path(name)
        settings, _env, _auth = setup(tmp)
        _model_id, dataset_id, _net = store_model_and_dataset(settings, make_rows(args.rows), tmp)
        timed_read(settings.database_url, dataset_id, args.chunk_rows, 0)  # into the OS's page cache
        walls: dict[str, list[float]] = {"unmapped": [], "mapped": []}
        for run in range(args.runs):
            for label, mmap_bytes in (("unmapped", 0), ("mapped", SPLIT_MMAP_BYTES)):
                wall_s, user_s, system_s, faults = timed_read(settings.database_url, dataset_id, args.chunk_rows,
                                                              mmap_bytes)
                walls[label].append(wall_s)
                print(f"run {run + 1} {label:8s} {wall_s:6.3f} s (user {user_s:.2f} s, system {system_s:.2f} s, "
                      f"{faults} page faults)", flush=True)
    unmapped, mapped = statistics.median(walls["unmapped"]), statistics.median(walls["mapped"])
    print(f"{args.rows} rows x {FEATURES} float32 read in batches of {args.chunk_rows}: median unmapped {unmapped:.3f} s, "
          f"mapped {mapped:.3f} s; unmapped / mapped: {unmapped / mapped:.2f}x")
