"""Each fused CUDA kernel of gpu_kernels and gpu_optim (gpu_recurrent's: test_gpu_recurrent.py)
against the NumPy formulation it replaces: float64 to 1e-10 relative, float32 to float32 tolerance, NaN and inf included.
Those tests are marked `gpu` (reported as not run without a CUDA GPU and CuPy). The unmarked
ones check, without CuPy, what the GPU path's coverage and layout rest on, and that importing
the GPU modules and training on the CPU never needs CuPy."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from tests.worker.engine.gpu_helpers import DTYPES, close, sample
from worker.engine import gpu_kernels, gpu_optim, gpu_recurrent
from worker.engine.activations import ACTIVATIONS, get_activation
from worker.engine.losses import get_loss
from worker.engine.optimizers import make_optimizer

OPTIMIZERS = {
    "sgd": {"type": "sgd", "momentum": 0.0, "nesterov": False},
    "momentum": {"type": "sgd", "momentum": 0.9, "nesterov": False},
    "nesterov": {"type": "sgd", "momentum": 0.9, "nesterov": True},
    "adam": {"type": "adam", "beta1": 0.9, "beta2": 0.999, "eps": 1e-8},
    "adamw": {"type": "adamw", "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.01},
    "rmsprop": {"type": "rmsprop", "rho": 0.9, "eps": 1e-8},
    "adagrad": {"type": "adagrad", "eps": 1e-10},
}
BOUNDS = np.array([0, 5000, 5010, 9000, 9001])  # pieces of 4096 cut the first and third


# --- without a GPU --------------------------------------------------------------------------
def test_every_activation_but_softmax_has_both_fused_expressions():
    fused = {name for name in ACTIVATIONS if get_activation(name).gpu_fused}
    assert fused == set(ACTIVATIONS) - {"softmax"}
    assert set(gpu_kernels.FORWARD) == fused == set(gpu_kernels.BACKWARD)


def test_chunk_table_covers_each_parameter_in_pieces_that_never_straddle_two():
    table = gpu_optim.chunk_table(BOUNDS, np, size=4096)
    assert table[:, 0].tolist() == [0, 4096, 5000, 5010, 9000]
    assert table[:, 1].tolist() == [4096, 5000, 5010, 9000, 9001]
    assert table[:, 2].tolist() == [0, 0, 1, 2, 3]


def test_the_gpu_modules_import_and_a_cpu_fit_runs_where_cupy_cannot_be_imported():
    code = ("import sys; sys.modules['cupy'] = None\n"
            "import numpy as np\n"
            "from worker.engine import Network, gpu_kernels, gpu_optim, gpu_recurrent, gpu_step\n"
            "spec = {'layers': [{'type': 'dense', 'units': 4, 'activation': 'gelu'},"
            " {'type': 'dense', 'activation': 'softmax'}], 'loss': 'cross_entropy', 'epochs': 2,"
            " 'optimizer': {'type': 'adam', 'learning_rate': 0.01}}\n"
            "X = np.random.default_rng(0).normal(size=(40, 3)); y = (X[:, 0] > 0).astype(int)\n"
            "h = Network.from_spec(spec, input_shape=(3,), device='cpu').fit(X, y)\n"
            "print(len(h.epochs), h.epochs[-1]['loss'] is not None)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["2", "True"]


def test_every_kernel_source_compiles_with_nvrtc_without_a_device():
    """NVRTC (CuPy's compiler) needs no GPU: each RawKernel source compiles to PTX, both dtypes."""
    nvrtc = pytest.importorskip("cupy_backends.cuda.libs.nvrtc")
    sources = [gpu_kernels.ACT_BACKWARD_BIAS.format(T=t, EXPR=e) for t in ("float", "double")
               for e in gpu_kernels.BACKWARD.values()]
    sources += [src.format(T=t) for t in ("float", "double") for src in (
        gpu_kernels.SOFTMAX_CE, gpu_kernels.SIGMOID_CE, gpu_optim.OPT_STEP, gpu_recurrent.LSTM_FORWARD,
        gpu_recurrent.LSTM_BACKWARD, gpu_recurrent.GRU_FORWARD, gpu_recurrent.GRU_BACKWARD)]
    sources += [gpu_kernels.GATHER_ROWS.format(TX=t, TY=ty) for t in ("float", "double") for ty in (t, "long long")]
    elementwise = ("typedef {T} T;\nextern \"C\" __global__ void f(T* zp, T* ap, const T* bp) {{\n"
                   "int i = threadIdx.x; T& z = zp[i]; T& a = ap[i]; const T b = bp[i];\n{op}\n}}")
    sources += [elementwise.format(T=t, op=gpu_kernels.bias_act_operation(name, keep)) for t in ("float", "double")
                for name in gpu_kernels.FORWARD for keep in (False, True)]  # as CuPy wraps an ElementwiseKernel
    try:
        nvrtc.getVersion()
    except Exception as exc:  # noqa: BLE001  (CuPy without a loadable libnvrtc)
        pytest.skip(f"NVRTC not loadable here: {exc}")
    for source in sources:
        program = nvrtc.createProgram(source, "bps.cu", [], [])
        try:
            nvrtc.compileProgram(program, ["--gpu-architecture=compute_80"])
        except nvrtc.NVRTCError as exc:
            raise AssertionError(f"{nvrtc.getProgramLog(program)}\n{source}") from exc


# --- on a GPU -------------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", sorted(gpu_kernels.FORWARD))
def test_bias_act_equals_the_activation_forward(cp, activation, dtype):
    z, bias = sample((37, 70), dtype), sample((70,), dtype, seed=1, special=False)
    with np.errstate(all="ignore"):
        ref_z, ref_a = gpu_kernels.reference_bias_act(z, bias, activation)
    in_place = cp.asarray(z)
    gpu_kernels.bias_act(in_place, cp.asarray(bias), activation)
    close(in_place, ref_a, dtype)
    kept, a = cp.asarray(z), cp.empty(z.shape, dtype)
    gpu_kernels.bias_act(kept, cp.asarray(bias), activation, out=a)
    close(kept, ref_z, dtype)
    close(a, ref_a, dtype)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", sorted(gpu_kernels.BACKWARD))
def test_act_backward_bias_equals_the_activation_backward_and_column_sums(cp, activation, dtype):
    z = sample((130, 45), dtype, seed=2, special=False)
    with np.errstate(all="ignore"):
        a = get_activation(activation).forward(z.copy())
    grad_a = sample(z.shape, dtype, seed=3)
    with np.errstate(all="ignore"):
        ref_dz, ref_bias = gpu_kernels.reference_act_backward_bias(grad_a, a, z, activation)
    g, grad_bias = cp.asarray(grad_a), cp.empty(45, dtype)
    dz = gpu_kernels.act_backward_bias(g, cp.asarray(a), cp.asarray(z), activation, g, grad_bias)
    assert dz is g  # in place, as the dense layer calls it
    close(dz, ref_dz, dtype)
    close(grad_bias, ref_bias, dtype)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["cross_entropy", "binary_cross_entropy"])
def test_fused_losses_equal_the_array_formulation(cp, name, dtype):
    logits = sample((300, 7), dtype, seed=4, special=False)
    logits[5, 2], logits[9, 0], logits[11, 3] = np.nan, np.inf, -np.inf
    rng = np.random.default_rng(5)
    y = rng.integers(0, 7, 300) if name == "cross_entropy" else (rng.random((300, 7)) > 0.5).astype(dtype)
    with np.errstate(all="ignore"):
        ref_value, ref_grad, ref_correct = gpu_kernels.reference_loss(get_loss(name), logits, y)
    value, grad, correct = get_loss(name).value_grad_correct(cp.asarray(logits), cp.asarray(y))
    close(value, ref_value, dtype)
    close(grad, ref_grad, dtype)
    close(correct, ref_correct, np.float64)


@pytest.mark.gpu
@pytest.mark.parametrize("y_dtype", [np.int64, np.float32])
def test_gather_rows_equals_take_from_the_permutation(cp, y_dtype):
    X, y = sample((50, 3, 4), np.float32), np.arange(100).reshape(50, 2).astype(y_dtype)
    perm = np.random.default_rng(6).permutation(50)
    xb, yb = cp.empty((16, 3, 4), np.float32), cp.empty((16, 2), y_dtype)
    got_x, got_y = gpu_kernels.gather_rows(cp.asarray(X), cp.asarray(y), cp.asarray(perm), 40, xb, yb)
    assert got_x.shape == (10, 3, 4)
    np.testing.assert_array_equal(got_x.get(), X[perm[40:]])
    np.testing.assert_array_equal(got_y.get(), y[perm[40:]])


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("clip", [None, 0.5])
@pytest.mark.parametrize("kind", sorted(OPTIMIZERS))
def test_optimizer_kernel_equals_the_numpy_step_and_norms(cp, kind, clip, dtype):
    cfg, flat = OPTIMIZERS[kind], sample((BOUNDS[-1],), dtype, seed=7, special=False)
    host, device = flat.copy(), cp.asarray(flat)
    shapes = {f"p{k}": (int(BOUNDS[k + 1] - BOUNDS[k]),) for k in range(len(BOUNDS) - 1)}

    def views(buf):
        return {name: buf[lo:lo + s[0]] for (name, s), lo in zip(shapes.items(), BOUNDS[:-1])}

    ref_opt, gpu_opt = make_optimizer(cfg, views(host), host), make_optimizer(cfg, views(device), device)
    table, squares = gpu_optim.chunk_table(BOUNDS, cp), cp.zeros(len(shapes))
    for t in range(3):
        g = sample(flat.shape, dtype, seed=10 + t, special=False)
        if t == 2:
            g[5004] = np.nan  # one parameter's update and norm go NaN, the others do not
        with np.errstate(all="ignore"):
            ref_squares = gpu_optim.reference_step(ref_opt, g.copy(), 0.01, BOUNDS, clip)
        gpu_optim.step(gpu_opt, cp.asarray(g), 0.01, table, squares, clip)
        close(squares, ref_squares, dtype)
        squares[...] = 0
        close(device, host, dtype)
        for slot, state in ref_opt.flat_state.items():
            close(gpu_opt.flat_state[slot], state, dtype)


@pytest.mark.gpu
def test_finish_norms_adds_the_roots_and_clears_the_squares(cp):
    squares, norms = cp.asarray([4.0, 9.0, np.inf]), cp.asarray([1.0, 1.0, 1.0])
    gpu_optim.finish_norms(squares, norms)
    assert norms.get().tolist() == [3.0, 4.0, np.inf] and squares.get().tolist() == [0, 0, 0]


class _SignatureCheck:
    """Stands in for cupy.RawKernel: a launch must pass exactly the kernel's parameters, arrays
    of the declared element type (C-contiguous) for pointers and NumPy scalars of it otherwise."""

    C_TYPES = {"float": np.float32, "double": np.float64, "long long": np.int64, "int": np.int32}
    launched: list[str] = []

    def __init__(self, source: str, name: str) -> None:
        import re  # noqa: PLC0415

        self.name, typedef = name, re.search(r"typedef (\w+) T;", source)
        self.params = re.search(rf"void {name}\((.*?)\)\s*\{{", source, re.S).group(1).split(",")
        self.t = typedef.group(1) if typedef else None

    def __call__(self, grid, block, args) -> None:
        assert len(args) == len(self.params), (self.name, len(args), self.params)
        for arg, param in zip(args, self.params, strict=True):
            c_type = param.strip().rsplit(" ", 1)[0].replace("const ", "")
            base = c_type.rstrip("*").strip()
            expected = self.C_TYPES[self.t if base == "T" else base]
            assert isinstance(arg, np.ndarray) == c_type.endswith("*"), (self.name, param)
            assert np.asarray(arg).dtype == expected, (self.name, param, np.asarray(arg).dtype)
            assert not isinstance(arg, np.ndarray) or arg.flags.c_contiguous, (self.name, param)
        self.launched.append(self.name)


def test_the_optimizer_step_formats_its_source_once_per_dtype(monkeypatch):
    seen = []
    monkeypatch.setattr(gpu_optim, "raw_kernel", lambda source, name: seen.append(source) or (lambda *_: None))
    for dtype in (np.float32, np.float64, np.float32):
        flat = np.ones(BOUNDS[-1], dtype)
        optimizer = make_optimizer(OPTIMIZERS["adam"], {"all": flat}, flat)
        for _ in range(2):
            gpu_optim.step(optimizer, flat.copy(), 0.1, gpu_optim.chunk_table(BOUNDS, np), np.zeros(4), None)
    assert seen[0] is seen[1] is seen[4] is seen[5] and seen[2] is seen[3]  # the same string object each step
    assert seen[0] == gpu_optim.OPT_STEP.format(T="float") and seen[2] == gpu_optim.OPT_STEP.format(T="double")


@pytest.mark.parametrize("dtype", DTYPES)
def test_every_launch_passes_its_kernels_parameters_in_type(monkeypatch, dtype):
    for module in (gpu_kernels, gpu_optim, gpu_recurrent):
        monkeypatch.setattr(module, "raw_kernel", _SignatureCheck)
    _SignatureCheck.launched = []
    z, ones, labels, n, u = np.ones((5, 7), dtype), np.ones(7, dtype), np.zeros(5, np.int64), 3, 4
    for activation in gpu_kernels.BACKWARD:
        gpu_kernels.act_backward_bias(z, z, None, activation, z, ones)
    gpu_kernels.softmax_cross_entropy(z, labels, z, np.zeros(2), 0.2)
    gpu_kernels.sigmoid_cross_entropy(z, z, z, np.zeros(2), 0.2)
    gpu_kernels.gather_rows(z, labels, np.arange(5), 1, z.copy(), labels.copy())
    for cfg in OPTIMIZERS.values():
        flat = np.ones(BOUNDS[-1], dtype)
        optimizer = make_optimizer(cfg, {"all": flat}, flat)
        for clip in (None, 1.0):
            gpu_optim.step(optimizer, flat.copy(), 0.1, gpu_optim.chunk_table(BOUNDS, np), np.zeros(4), clip)
    rows = [np.ones((n, u), dtype) for _ in range(4)]
    four, three = np.ones((n, 4 * u), dtype), np.ones((n, 3 * u), dtype)
    for hh in (None, four):
        gpu_recurrent.lstm_forward(four, hh, *rows)
    gpu_recurrent.lstm_backward(four, *rows, four)
    gpu_recurrent.gru_forward(three, None, np.ones(3 * u, dtype), *rows[:3])
    gpu_recurrent.gru_backward(three, *rows[:3], three, three)
    assert set(_SignatureCheck.launched) == {"act_backward_bias", "softmax_ce", "sigmoid_ce", "gather_rows",
                                             "opt_step", "lstm_forward", "lstm_backward", "gru_forward",
                                             "gru_backward"}
