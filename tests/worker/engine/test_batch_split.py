"""Batch-split parallelism (batch_split): the layers that split their batch give the same outputs
and gradients on 2 and 3 parts as on one, and pass finite differences while split; the split
itself covers every row once, re-raises a part's error, runs the parts in other threads, and
holds OpenBLAS to one thread while they run."""
from __future__ import annotations

import threading

import numpy as np
import pytest
from threadpoolctl import threadpool_info

from tests.worker.engine.layer_helpers import build_layer, check_layer_grads
from worker.engine import batch_split, kernel_jit, threads

LAYERS = [
    ({"type": "conv2d", "filters": 3, "kernel_size": 3, "activation": "relu"}, (2, 7, 6)),
    ({"type": "conv2d", "filters": 2, "kernel_size": [3, 2], "stride": 2, "padding": 1, "activation": "tanh"}, (3, 7, 8)),
    ({"type": "maxpool2d", "pool_size": 2}, (3, 6, 6)),
    ({"type": "maxpool2d", "pool_size": 3, "stride": 2}, (2, 7, 7)),
    ({"type": "lstm", "units": 5, "return_sequences": True}, (4, 3)),
    ({"type": "lstm", "units": 5}, (4, 3)),
    ({"type": "gru", "units": 4, "return_sequences": True}, (4, 3)),
    ({"type": "gru", "units": 4}, (4, 3)),
]
TOLERANCE = {np.float32: {"rtol": 2e-5, "atol": 1e-6}, np.float64: {"rtol": 1e-11, "atol": 1e-13}}


def run(layer, x, upstream, parts):
    with batch_split.forced(parts):
        out = layer.forward(x.copy(), True).copy()
        dx = layer.backward(upstream.copy(), True).copy()
    return out, dx, {name: grad.copy() for name, grad in layer.grads.items()}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("parts", [2, 3])
@pytest.mark.parametrize(("config", "in_shape"), LAYERS)
def test_split_layers_equal_the_unsplit_ones(config, in_shape, parts, dtype):
    layer = build_layer(config, in_shape, dtype=dtype)
    rng = np.random.default_rng(11)
    for rows in (7, 5):  # a second batch size: every part's scratch arrays change shape
        x = rng.standard_normal((rows, *in_shape)).astype(dtype)
        upstream = rng.standard_normal((rows, *layer.out_shape)).astype(dtype)
        reference = run(layer, x, upstream, 1)
        for _ in range(2):  # the second call reuses the parts' buffers
            out, dx, grads = run(layer, x, upstream, parts)
            np.testing.assert_allclose(out, reference[0], **TOLERANCE[dtype])
            np.testing.assert_allclose(dx, reference[1], **TOLERANCE[dtype])
            for name, grad in reference[2].items():
                np.testing.assert_allclose(grads[name], grad, **TOLERANCE[dtype], err_msg=name)


@pytest.mark.parametrize("parts", [2, 3])
@pytest.mark.parametrize("config", [LAYERS[0][0], LAYERS[1][0]])
def test_a_split_conv_without_input_gradient_sums_the_parts_weight_gradients(config, parts):
    """The first layer's backward (no dx): each part's share summed into the gradients."""
    layer, in_shape = build_layer(config, (3, 7, 8)), (3, 7, 8)
    rng = np.random.default_rng(13)
    x, upstream = rng.standard_normal((7, *in_shape)), rng.standard_normal((7, *layer.out_shape))
    grads = []
    for count in (1, parts):
        with batch_split.forced(count):
            layer.forward(x.copy(), True)
            assert layer.backward(upstream.copy(), need_input_grad=False) is None
        grads.append({name: grad.copy() for name, grad in layer.grads.items()})
    for name, grad in grads[0].items():
        np.testing.assert_allclose(grads[1][name], grad, **TOLERANCE[np.float64], err_msg=name)


@pytest.mark.parametrize(("config", "in_shape"), LAYERS)
def test_split_layers_pass_finite_differences(config, in_shape):
    layer = build_layer(config, in_shape)
    with batch_split.forced(2):
        check_layer_grads(layer, np.random.default_rng(12).standard_normal((3, *in_shape)))


def test_a_training_budget_of_two_threads_splits_a_batch_in_the_main_thread_only():
    with threads.thread_budget(2, kernels=True):
        assert batch_split.parts_for(64) == 2
        assert batch_split.parts_for(batch_split.MIN_PART_ROWS) == 1  # too few rows to pay
        seen = []
        worker = threading.Thread(target=lambda: seen.append(batch_split.parts_for(64)))
        worker.start()
        worker.join()
        assert seen == [1]
        small = batch_split.MIN_SPLIT_ELEMENTS - 1
        assert batch_split.parts_for(64, small) == 1  # the caller's pass is too short
        assert batch_split.parts_for(64, small + 1) == 2
        with batch_split.forced(2):
            assert batch_split.parts_for(64, small) == 2  # tests split what they ask for
    with threads.thread_budget(1, kernels=True):
        assert batch_split.parts_for(64) == 1
    with threads.thread_budget(kernel_jit.PARALLEL_MIN_THREADS, kernels=True):
        assert batch_split.parts_for(64) == 1  # the kernels' parallel variants take over


def test_run_covers_every_row_once_in_other_threads_with_one_blas_thread():
    seen, lock = [], threading.Lock()

    def work(lo, hi, part):
        blas = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
        with lock:
            seen.append((lo, hi, part, threading.get_ident(), blas))

    with threads.thread_budget(2, kernels=False):
        assert batch_split.run(10, work, 3) == 3
    seen.sort()
    assert [(lo, hi, part) for lo, hi, part, _, _ in seen] == [(0, 3, 0), (3, 6, 1), (6, 10, 2)]
    assert seen[0][3] == threading.get_ident() and len({s[3] for s in seen}) == 3
    assert all(set(blas) == {1} for *_, blas in seen)


def test_an_error_in_a_helper_part_reaches_the_caller_after_every_part_ended():
    ended = []

    def work(lo, hi, part):
        if part == 1:
            raise ValueError("part 1 failed")
        ended.append(part)

    with pytest.raises(ValueError, match="part 1 failed"):
        batch_split.run(4, work, 2)
    assert ended == [0]
    assert batch_split.run(4, lambda lo, hi, part: ended.append(part), 2) == 2  # the helper lives on


def test_a_signal_wakes_a_waiter_that_stopped_spinning_and_went_to_sleep(monkeypatch):
    from worker.engine import spin  # noqa: PLC0415

    monkeypatch.setattr(spin, "SPIN_LOADS", 10)
    signal, seen = spin.Signal(), []
    waiter = threading.Thread(target=lambda: (signal.wait_for(1), seen.append(1), signal.wait_for(2), seen.append(2)))
    waiter.start()
    while not spin._GET(signal._cells, spin.SLEEPING):  # the waiter is asleep on its Event
        threading.Event().wait(0.001)
    signal.raise_to(1)
    signal.raise_to(2)
    waiter.join(timeout=10)
    assert seen == [1, 2] and not waiter.is_alive()


def test_a_forked_child_makes_its_own_helpers():
    import multiprocessing  # noqa: PLC0415

    batch_split.run(4, lambda lo, hi, part: None, 2)  # the parent has a helper before the fork
    with multiprocessing.get_context("fork").Pool(1) as pool:
        parts = pool.apply(_split_in_child)
    assert parts == [(0, 2, 0), (2, 4, 1)]


def _split_in_child():
    seen = []
    batch_split.run(4, lambda lo, hi, part: seen.append((lo, hi, part)), 2)
    return sorted(seen)
