"""Window helpers shared by conv2d and the pooling layers.

The column matrix is laid out `(C, kh, kw, N, Ho, Wo)` or `(C, kh, kw, Ho, Wo, N)` (see
WindowLayout), so that `weight.reshape(O, C*kh*kw) @ cols.reshape(C*kh*kw, -1)` is one GEMM
for the whole batch.
Both directions loop over the kh*kw kernel offsets with strided slices: never `np.add.at`.
"""
from __future__ import annotations

from typing import Any

from worker.engine.layers.base import ShapeError


def pair(value: Any, what: str) -> tuple[int, int]:
    """An int or a [h, w] list as an (h, w) tuple of ints."""
    if isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise ShapeError(f"{what} must be an int or [h, w], got {value!r}")
        h, w = int(value[0]), int(value[1])
    else:
        h = w = int(value)
    return h, w


def window_count(size: int, window: int, stride: int) -> int:
    """Positions of a window sliding over `size` (PyTorch's floor mode); may be <= 0."""
    return (size - window) // stride + 1 if size >= window else 0


def offsets(kh: int, kw: int, sh: int, sw: int, ho: int, wo: int):
    """Yields (i, j, row slice, col slice): the input positions seen by kernel offset (i, j)."""
    for i in range(kh):
        rows = slice(i, i + sh * (ho - 1) + 1, sh)
        for j in range(kw):
            yield i, j, rows, slice(j, j + sw * (wo - 1) + 1, sw)


class WindowLayout:
    """Where the batch axis sits in the channel-first working copy of the input.

    batch_last=False: (C, N, Hp, Wp), cols (C, kh, kw, N, Ho, Wo). Cheap transposes, but every
    window slice is made of short rows of Wo elements. batch_last=True: (C, Hp, Wp, N), cols
    (C, kh, kw, Ho, Wo, N): window slices are long contiguous runs (fast im2col/col2im), paid
    for by strided transposes of the input and output. Small Wo favours batch-last.
    """

    def __init__(self, batch_last: bool) -> None:
        self.batch_last = batch_last
        self.to_nchw = (3, 0, 1, 2) if batch_last else (1, 0, 2, 3)
        self.from_nchw = (1, 2, 3, 0) if batch_last else (1, 0, 2, 3)

    def shape(self, c: int, n: int, h: int, w: int) -> tuple[int, int, int, int]:
        return (c, h, w, n) if self.batch_last else (c, n, h, w)

    def window(self, rows: slice, cols: slice) -> tuple[slice, ...]:
        return (slice(None), rows, cols) if self.batch_last else (slice(None), slice(None), rows, cols)

    def padded(self, xp: Any, x: Any, pads: tuple[int, int, int, int], out: Any | None) -> Any:
        """x (N, C, H, W) -> zero-padded working copy (a view when nothing needs copying)."""
        top, bottom, left, right = pads
        n, c, h, w = x.shape
        if not any(pads) and not self.batch_last:
            return x.transpose(self.from_nchw)
        shape = self.shape(c, n, h + top + bottom, w + left + right)
        if out is None or out.shape != shape or out.dtype != x.dtype:
            out = xp.zeros(shape, dtype=x.dtype)  # the border stays zero across reuses
        out[self.window(slice(top, top + h), slice(left, left + w))] = x.transpose(self.from_nchw)
        return out


def im2col(xp: Any, layout: WindowLayout, xpad: Any, kernel: tuple[int, int],
           stride: tuple[int, int], out_hw: tuple[int, int], cols: Any | None = None) -> Any:
    """Working copy -> cols (C, kh, kw, *layout.shape(.., N, Ho, Wo)[1:]), reusing `cols`."""
    c, n = xpad.shape[0], xpad.shape[3 if layout.batch_last else 1]
    (kh, kw), (sh, sw), (ho, wo) = kernel, stride, out_hw
    shape = (c, kh, kw, *layout.shape(c, n, ho, wo)[1:])
    if cols is None or cols.shape != shape or cols.dtype != xpad.dtype:
        cols = xp.empty(shape, dtype=xpad.dtype)
    for i, j, rows, colslice in offsets(kh, kw, sh, sw, ho, wo):
        cols[:, i, j] = xpad[layout.window(rows, colslice)]
    return cols


def col2im(xp: Any, layout: WindowLayout, dcols: Any, x_shape: tuple[int, ...],
           kernel: tuple[int, int], stride: tuple[int, int],
           pads: tuple[int, int, int, int], out_hw: tuple[int, int]) -> Any:
    """dcols (as im2col's cols) -> dx (N, C, H, W): sums every window's share back."""
    n, c, h, w = x_shape
    top, bottom, left, right = pads
    (kh, kw), (sh, sw) = kernel, stride
    dpad = xp.zeros(layout.shape(c, n, h + top + bottom, w + left + right), dtype=dcols.dtype)
    for i, j, rows, colslice in offsets(kh, kw, sh, sw, *out_hw):
        dpad[layout.window(rows, colslice)] += dcols[:, i, j]
    inner = dpad[layout.window(slice(top, top + h), slice(left, left + w))]
    return xp.ascontiguousarray(inner.transpose(layout.to_nchw))
