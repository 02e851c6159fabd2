"""Downloads streamed to a path or an open binary file, a block at a time (never the whole body
in memory); a path is written under a temporary name and renamed once complete, so a failed
download leaves no partial file behind."""
from __future__ import annotations

import os
from pathlib import Path
from typing import IO, Any

from bps_client.transport import Transport

Target = str | os.PathLike | IO[bytes]
BLOCK_BYTES = 1 << 20


def pick_format(target: Any, given: str | None, suffixes: dict[str, str], default: str) -> str:
    """`given`, else the format the target path's suffix names (".onnx" -> "onnx"), else `default`."""
    if given:
        return given
    if isinstance(target, (str, os.PathLike)):
        return suffixes.get(Path(target).suffix.lower(), default)
    return default


def save(transport: Transport, path: str, params: dict[str, Any], target: Target) -> Any:
    """GET `path` into `target`; returns the Path written, or the file object as given."""
    response = transport.request("GET", path, params=params, stream=True)
    try:
        if hasattr(target, "write"):
            for block in response.iter_bytes(BLOCK_BYTES):
                target.write(block)
            return target
        final = Path(target)
        partial = final.with_name(f".{final.name}.part")
        try:
            with partial.open("wb") as out:
                for block in response.iter_bytes(BLOCK_BYTES):
                    out.write(block)
            os.replace(partial, final)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        return final
    finally:
        response.close()
