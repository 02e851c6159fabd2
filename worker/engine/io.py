"""Model files: .npz with the parameters and buffers under their PyTorch state_dict names,
"spec" (the normalised spec as a JSON string array) and "input_shape". Loaded with
allow_pickle=False; a file that needs pickle (object arrays) is refused with ValueError."""
from __future__ import annotations

import json
from typing import IO, Any

import numpy as np

from worker.engine.backend import to_device, to_numpy

FORMAT = "bps-model-1"


def save(net: Any, file: str | IO[bytes]) -> None:
    if not net.layers:
        raise ValueError("the network is not built yet: nothing to save")
    arrays = {name: to_numpy(a) for name, a in net.state_dict().items()}
    arrays["spec"] = np.array(json.dumps(net.spec))
    arrays["input_shape"] = np.array(net.input_shape, np.int64)
    arrays["dtype"] = np.array(net.dtype.name)  # may differ from the spec's (from_spec(dtype=...))
    arrays["format"] = np.array(FORMAT)
    np.savez(file, **arrays)


def read_arrays(file: str | IO[bytes]) -> dict[str, np.ndarray]:
    """Every array of an .npz, refusing object arrays (which would need pickle)."""
    try:
        with np.load(file, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except ValueError as exc:
        raise ValueError(f"refusing to load the model file: it holds object arrays that need pickle ({exc})") \
            from exc
    except (OSError, EOFError) as exc:
        raise ValueError(f"not a readable .npz model file: {exc}") from exc


def load(cls: type, file: str | IO[bytes], device: str = "cpu") -> Any:
    arrays = read_arrays(file)
    missing = {"spec", "input_shape"} - arrays.keys()
    if missing:
        raise ValueError(f"not a model file: missing {sorted(missing)}")
    spec = json.loads(str(arrays["spec"]))
    dtype = str(arrays["dtype"]) if "dtype" in arrays else None
    net = cls(spec, input_shape=tuple(int(d) for d in arrays["input_shape"]), dtype=dtype, device=device)
    state = net.state_dict()
    absent = sorted(set(state) - arrays.keys())
    if absent:
        raise ValueError(f"the model file lacks {absent}")
    for name, target in state.items():
        if arrays[name].shape != target.shape:
            raise ValueError(f"{name}: shape {arrays[name].shape} in the file, {target.shape} in the spec")
        target[...] = to_device(arrays[name], net.xp, target.dtype)
    return net
