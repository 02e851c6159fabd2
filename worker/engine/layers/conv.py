"""conv2d: nn.Conv2d (NCHW, cross-correlation) as a contiguous im2col and one GEMM per batch.

Training on NumPy runs the CPU kernels of cpu_conv (im2col straight from the input, the products
per group of samples (sample_groups), their result moved to NCHW with the bias and ReLU in the
same pass, the reverse in backward, col2im per sample), into buffers reused across batches and
into the network's gradient views, on the parts of the batch at once when the thread budget
allows (batch_split: each part its own columns and products, the weight and bias gradients
summed over the parts); prediction and CuPy use the array formulation below (`forward`/`backward`
with `_kernels` false).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from worker.engine import batch_split
from worker.engine.activations import get_activation, initial_weight
from worker.engine.backend import to_device
from worker.engine.cpu_blas import SMALL_GEMM
from worker.engine.layers import Layer, register
from worker.engine.layers.base import BuildContext, ShapeError
from worker.engine.layers.im2col import WindowLayout, col2im, im2col, pair, window_count

# Below this output width the batch-last layout wins (measured: bench/bench_cnn_rnn.py).
BATCH_LAST_BELOW_WIDTH = 16
# Training's three products run as stacked products over equal groups of samples, each group's
# at most SMALL_PRODUCT multiply-adds: OpenBLAS's small-matrix kernels, which stop there, ran
# the bench CNN's narrow products faster than its packed path. The weight gradient, summed over
# the groups after, is grouped only below GROUPED_BELOW_OUTPUT elements (filters x C*kh*kw):
# the bench's second conv, above it, did not gain from grouping, and NumPy holds the GIL through
# a matmul with a small output (the batch split's parts ran the first conv's gradient in turn).
# Measured with bench cnn_rnn --only cnn, 2026-11-30 11:08-11:42 UTC (commits dfe4ee4, 8fff549).
GROUPED_BELOW_OUTPUT = 1024
SMALL_PRODUCT = SMALL_GEMM


def sample_groups(samples: int, macs_per_sample: int) -> int:
    """How many equal groups of samples to cut `samples` into: the fewest whose products each
    stay within SMALL_PRODUCT (one sample per group at most)."""
    most = max(1, min(samples, SMALL_PRODUCT // max(1, macs_per_sample)))
    return samples // next(size for size in range(most, 0, -1) if samples % size == 0)


def by_group(matrix: np.ndarray, groups: int) -> np.ndarray:
    """(R, N*P) -> the (groups, R, N*P/groups) view of its column blocks, samples in order."""
    return matrix.reshape(matrix.shape[0], groups, -1).transpose(1, 0, 2)


def load_activation(name: str | None) -> Any | None:
    """The activation object for `name`, or None for the identity (no work at all)."""
    return None if name in (None, "linear") else get_activation(name)


@register
class Conv2D(Layer):
    """config: filters, kernel_size, stride=1, padding=0 | "same", activation="linear"."""

    kind = "conv2d"
    use_kernels = True  # training on NumPy runs cpu_conv's kernels (tests turn it off for the reference)

    def __init__(self, config: dict[str, Any], index: int) -> None:
        super().__init__(config, index)
        self.filters = int(config["filters"])
        self.kernel = pair(config["kernel_size"], f"layer {index} (conv2d) kernel_size")
        self.stride = pair(config.get("stride", 1), f"layer {index} (conv2d) stride")
        self.padding = config.get("padding", 0)
        self.activation_name = config.get("activation") or "linear"
        self._cols = self._xpad = self._ones = None
        self._kernels = False  # whether the last forward ran the CPU kernels (then backward does too)

    def _where(self) -> str:
        return f"layer {self.index} (conv2d)"

    def pads(self) -> tuple[int, int, int, int]:
        """(top, bottom, left, right); "same" splits odd totals as PyTorch (extra at the end)."""
        if self.padding == "same":
            (kh, kw) = self.kernel
            return (kh - 1) // 2, kh - 1 - (kh - 1) // 2, (kw - 1) // 2, kw - 1 - (kw - 1) // 2
        if self.padding == "valid":
            return 0, 0, 0, 0
        ph, pw = pair(self.padding, f"{self._where()} padding")
        return ph, ph, pw, pw

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(input_shape) != 3:
            raise ShapeError(f"{self._where()} needs (channels, height, width) input, got shape "
                             f"{list(input_shape)}; set input_shape, e.g. [1, 28, 28]")
        if min(self.kernel) < 1 or min(self.stride) < 1 or self.filters < 1:
            raise ShapeError(f"{self._where()}: filters, kernel_size and stride must be positive")
        if self.padding == "same" and self.stride != (1, 1):
            raise ShapeError(f"{self._where()}: padding 'same' needs stride 1 (as in PyTorch)")
        top, bottom, left, right = self.pads()
        if min(top, bottom, left, right) < 0:
            raise ShapeError(f"{self._where()}: padding must not be negative")
        _, h, w = input_shape
        hp, wp = h + top + bottom, w + left + right
        (kh, kw), (sh, sw) = self.kernel, self.stride
        if kh > hp or kw > wp:
            raise ShapeError(f"{self._where()}: kernel {kh}x{kw} is larger than its padded input "
                             f"{hp}x{wp}")
        return self.filters, window_count(hp, kh, sh), window_count(wp, kw, sw)

    def n_params(self, input_shape: tuple[int, ...]) -> int:
        return self.filters * (input_shape[0] * self.kernel[0] * self.kernel[1] + 1)

    def build(self, input_shape: tuple[int, ...], ctx: BuildContext) -> tuple[int, ...]:
        out = super().build(input_shape, ctx)
        area = self.kernel[0] * self.kernel[1]
        shape = (self.filters, input_shape[0], *self.kernel)
        # The dense layers' rule (He for the ReLU family, else Glorot) with PyTorch's conv fans.
        weight = initial_weight(ctx.init_rng, shape, input_shape[0] * area, self.filters * area,
                                self.activation_name, ctx.dtype)
        bias = np.zeros(self.filters)
        self.params = {self.name("weight"): to_device(weight, ctx.xp, ctx.dtype),
                       self.name("bias"): to_device(bias, ctx.xp, ctx.dtype)}
        self.activation = load_activation(self.activation_name)
        self.layout = WindowLayout(batch_last=out[2] < BATCH_LAST_BELOW_WIDTH)
        return out

    def forward(self, x: Any, training: bool) -> Any:
        """x (N, C, H, W) -> (N, filters, Ho, Wo)."""
        self._kernels = training and self.xp is np and self.use_kernels
        if self._kernels:
            return self._forward_kernels(x)
        xp = self.xp
        weight, bias = self.params[self.name("weight")], self.params[self.name("bias")]
        n = x.shape[0]
        _, ho, wo = self.out_shape
        self._x_shape = x.shape
        layout = self.layout
        self._xpad = layout.padded(xp, x, self.pads(), self._xpad)
        self._cols = im2col(xp, layout, self._xpad, self.kernel, self.stride, (ho, wo), self._cols)
        gemm = weight.reshape(self.filters, -1) @ self._cols.reshape(weight[0].size, ho * wo * n)
        z = xp.empty((n, self.filters, ho, wo), dtype=gemm.dtype)
        xp.add(gemm.reshape(layout.shape(self.filters, n, ho, wo)).transpose(layout.to_nchw),
               bias.reshape(1, -1, 1, 1), out=z)
        if self.activation is None:
            self._z = self._a = z
        elif self.activation.needs_z:
            self._z, self._a = z, self.activation.forward(z)
        else:  # in place: backward needs only the activation's output
            self._z, self._a = None, self.activation.forward(z, out=z)
        return self._a

    def backward(self, grad_out: Any, need_input_grad: bool = True) -> Any:
        """grad_out (N, filters, Ho, Wo) -> dL/dx (N, C, H, W); fills weight and bias grads."""
        if self._kernels:
            return self._backward_kernels(grad_out, need_input_grad)
        xp = self.xp
        weight = self.params[self.name("weight")]
        # grad_out is this layer's to overwrite (the layer below's scratch), as in dense
        dz = grad_out if self.activation is None else self.activation.backward(
            grad_out, self._z, self._a, out=grad_out)
        k = weight[0].size
        dz_cm = xp.ascontiguousarray(dz.transpose(self.layout.from_nchw)).reshape(self.filters, -1)
        cols2d = self._cols.reshape(k, -1)
        if self._ones is None or self._ones.shape[0] != dz_cm.shape[1]:
            self._ones = xp.ones(dz_cm.shape[1], dtype=dz_cm.dtype)
        self.grads = {self.name("weight"): (dz_cm @ cols2d.T).reshape(weight.shape),
                      self.name("bias"): dz_cm @ self._ones}  # a GEMV: ~5x faster than sum(axis=1)
        if not need_input_grad:
            return None
        dcols = (weight.reshape(self.filters, k).T @ dz_cm).reshape(self._cols.shape)
        return col2im(xp, self.layout, dcols, self._x_shape, self.kernel, self.stride, self.pads(),
                      self.out_shape[1:])

    # --- training on NumPy: the CPU kernels (cpu_conv), on parts of the batch at once (batch_split)
    def _fused_relu(self) -> bool:
        return self.activation is not None and self.activation.name == "relu"

    def _forward_kernels(self, x: np.ndarray) -> np.ndarray:
        from worker.engine import cpu_conv  # noqa: PLC0415  (Numba: only where training runs)

        weight, bias = self.params[self.name("weight")], self.params[self.name("bias")]
        n, (_, ho, wo), f = x.shape[0], self.out_shape, self.filters
        k, relu, pads = weight[0].size, self._fused_relu(), self.pads()
        w2, z = weight.reshape(f, k), self.scratch("z", (n, f, ho, wo))
        self._x_shape, self._parts = x.shape, batch_split.parts_for(n, k * n * ho * wo)  # the columns

        def rows(lo: int, hi: int, part: int) -> None:
            groups = self._sample_groups(hi - lo)
            per_group = (hi - lo) // groups
            cols = cpu_conv.im2col(x[lo:hi], self.kernel, self.stride, pads,
                                   self.scratch(f"cols{part}", (k, hi - lo, ho, wo)))
            gemm = np.matmul(w2, by_group(cols.reshape(k, -1), groups),
                             out=self.scratch(f"gemm{part}", (groups, f, per_group * ho * wo)))
            cpu_conv.bias_act(gemm.reshape(groups, f, per_group, -1), bias, relu,
                              z[lo:hi].reshape(groups, per_group, f, -1))

        self._run_parts(n, rows)
        if self.activation is None or relu:
            self._z = self._a = z
        elif self.activation.needs_z:
            self._z, self._a = z, self.activation.forward(z)
        else:
            self._z, self._a = None, self.activation.forward(z, out=z)
        return self._a

    def _sample_groups(self, samples: int) -> int:
        """sample_groups for a part of `samples` rows."""
        _, ho, wo = self.out_shape
        return sample_groups(samples, self.filters * self.params[self.name("weight")][0].size * ho * wo)

    def _run_parts(self, n: int, rows: Any, *zeroed: np.ndarray) -> None:
        """rows(lo, hi, part) on the batch's parts at once (batch_split, the forward's parts);
        an empty batch runs none (sample_groups needs a sample) and sets `zeroed` to 0 instead."""
        if n == 0:
            for array in zeroed:
                array[...] = 0
            return
        batch_split.run(n, rows, self._parts)

    def _grad_array(self, suffix: str) -> np.ndarray:
        """The network's gradient view for a param (written in place), or a new array."""
        name, param = self.name(suffix), self.params[self.name(suffix)]
        grad = self.grads.get(name)
        if grad is None or grad.shape != param.shape:
            grad = self.grads[name] = np.empty_like(param)
        return grad

    def _filter_grad_t(self, cols: np.ndarray, dz_cm: np.ndarray, groups: int, part: int) -> np.ndarray:
        """cols (K, N*P) @ dz_cm.T (N*P, F) -> (K, F), the weight gradient transposed (OpenBLAS was
        slower on dz_cm @ cols.T); below GROUPED_BELOW_OUTPUT, per group of samples, summed after."""
        k, f = cols.shape[0], dz_cm.shape[0]
        out = self.scratch(f"grad_w_t{part}", (k, f))
        if k * f >= GROUPED_BELOW_OUTPUT:
            return np.matmul(cols, dz_cm.T, out=out)
        stacked = np.matmul(by_group(cols, groups), by_group(dz_cm, groups).transpose(0, 2, 1),
                            out=self.scratch(f"grad_w_groups{part}", (groups, k, f)))
        return np.sum(stacked, axis=0, out=out)

    def _backward_kernels(self, grad_out: np.ndarray, need_input_grad: bool) -> np.ndarray | None:
        from worker.engine import cpu_conv  # noqa: PLC0415

        weight = self.params[self.name("weight")]
        n, f, k = grad_out.shape[0], self.filters, weight[0].size
        relu = self._fused_relu()
        dz = grad_out if self.activation is None or relu else self.activation.backward(
            grad_out, self._z, self._a, out=grad_out)
        w2, pads = weight.reshape(f, k), self.pads()
        grad_w, grad_b = self._grad_array("weight").reshape(f, k), self._grad_array("bias")
        dx = self.scratch("dx", self._x_shape) if need_input_grad else None

        def rows(lo: int, hi: int, part: int) -> None:  # part 0 writes the gradients, the others their shares
            cols = self.scratch(f"cols{part}", (k, hi - lo, *self.out_shape[1:]))
            groups = self._sample_groups(hi - lo)
            dz_cm = self.scratch(f"dz_cm{part}", (f, cols[0].size))
            cpu_conv.grad_to_filters(dz[lo:hi].reshape(hi - lo, f, -1), self._a[lo:hi].reshape(hi - lo, f, -1),
                                     relu, dz_cm.reshape(f, hi - lo, -1),
                                     grad_b if part == 0 else self.scratch(f"grad_b{part}", (f,)))
            grad_w_t = self._filter_grad_t(cols.reshape(k, -1), dz_cm, groups, part)
            (grad_w if part == 0 else self.scratch(f"grad_w{part}", (f, k)))[...] = grad_w_t.T
            if dx is not None:
                dcols = np.matmul(w2.T, by_group(dz_cm, groups),
                                  out=self.scratch(f"dcols{part}", (groups, k, cols[0].size // groups)))
                cpu_conv.col2im(dcols.reshape(groups, k, (hi - lo) // groups, *self.out_shape[1:]),
                                self.kernel, self.stride, pads, dx[lo:hi])

        self._run_parts(n, rows, grad_w, grad_b)  # an empty batch: zero gradients
        for part in range(1, self._parts):
            grad_w += self.scratch(f"grad_w{part}", (f, k))
            grad_b += self.scratch(f"grad_b{part}", (f,))
        return dx
