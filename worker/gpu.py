"""GPU housekeeping for workers. CuPy is only touched when this process already imported it
(a job trained on the GPU here), so CPU workers and forking parents never initialise CUDA.
The pool's ceiling per worker is CuPy's own CUPY_GPU_MEMORY_LIMIT (e.g. "50%" or bytes)."""
from __future__ import annotations

import logging
import sys

log = logging.getLogger(__name__)


def release_gpu_memory() -> None:
    """Return the finished job's cached device and pinned blocks to the driver, so the next job
    (or another process on the GPU) starts from an empty pool."""
    cupy = sys.modules.get("cupy")
    if cupy is None:
        return
    try:
        cupy.get_default_memory_pool().free_all_blocks()
        cupy.get_default_pinned_memory_pool().free_all_blocks()
    except Exception:  # noqa: BLE001  (housekeeping must never fail a job)
        log.warning("could not release the CuPy memory pool", exc_info=True)


def is_gpu_out_of_memory(exc: BaseException) -> bool:
    """CuPy's OutOfMemoryError (and cuBLAS/cuDNN allocation failures that say so)."""
    name = type(exc).__name__
    module = type(exc).__module__ or ""
    if module.startswith("cupy") and name == "OutOfMemoryError":
        return True
    return module.startswith("cupy") and "out of memory" in str(exc).lower()


GPU_OOM_MESSAGE = ("the model does not fit in the GPU's memory{limit}: lower batch_size or the number of units, "
                   "or submit it with \"device\": \"cpu\"")
