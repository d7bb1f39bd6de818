"""ParallelDropout is a dropout: each value kept with probability 1 - p and scaled as PyTorch scales it, masks
reproducible under torch.manual_seed and independent of the thread count; nn.Dropout's path everywhere else."""

from __future__ import annotations

import math
import os
import signal
import time

import numpy as np
import pytest
import torch
import torch.nn as nn

from bundle.networks.blocks.dropout import MASK_CHUNK, ParallelDropout, fill_uniform, parallel_dropout_mask


def _kept(out: torch.Tensor) -> torch.Tensor:
    return out != 0  # the inputs of these tests have no zeros


def test_output_is_the_input_times_pytorchs_scaled_keep_mask():
    p = 0.1
    x = torch.rand(3, 40, 50, 7) + 0.5
    torch.manual_seed(0)
    out = ParallelDropout(p).train()(x)
    keep = _kept(out)
    expected = x * keep.float().div_(1.0 - p)  # nn.Dropout's arithmetic: mask / (1 - p), then the product
    torch.testing.assert_close(out, expected, rtol=0, atol=0)


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_keep_fraction_is_one_minus_p(p):
    n = 3 * MASK_CHUNK + 12345  # several chunks and a partial one
    x = torch.ones(n)
    torch.manual_seed(1)
    keep = _kept(ParallelDropout(p).train()(x)).double()
    sigma = math.sqrt(p * (1 - p) / n)
    assert abs(keep.mean().item() - (1 - p)) < 5 * sigma
    for start in range(0, n, MASK_CHUNK):  # every stream, not just their mean
        part = keep[start : start + MASK_CHUNK]
        assert abs(part.mean().item() - (1 - p)) < 5 * math.sqrt(p * (1 - p) / part.numel())
    # neighbouring values are independent: the fraction of kept neighbour pairs is q^2 (q = 1 - p); overlapping pairs
    # share a value, so the variance of that fraction is (q^2 - q^4 + 2 (q^3 - q^4)) / n
    q = 1 - p
    pairs = (keep[:-1] * keep[1:]).mean().item()
    assert abs(pairs - q**2) < 5 * math.sqrt((q**2 - q**4 + 2 * (q**3 - q**4)) / n)


def test_masks_follow_torch_manual_seed_and_not_the_thread_count():
    x = torch.rand(2 * MASK_CHUNK + 7) + 0.5
    layer = ParallelDropout(0.3).train()
    threads = torch.get_num_threads()
    try:
        torch.manual_seed(5)
        first = layer(x)
        second = layer(x)  # the next draw of the generator: another mask
        torch.set_num_threads(1)
        torch.manual_seed(5)
        again = layer(x)
    finally:
        torch.set_num_threads(threads)
    torch.testing.assert_close(again, first, rtol=0, atol=0)
    assert not torch.equal(first, second)
    torch.manual_seed(6)
    assert not torch.equal(layer(x), first)


def test_gradient_is_the_output_gradient_times_the_mask():
    p = 0.25
    x = (torch.rand(4, 16, 16, 24) + 0.5).requires_grad_()
    grad = torch.randn(4, 16, 16, 24)
    torch.manual_seed(2)
    out = ParallelDropout(p).train()(x)
    (gx,) = torch.autograd.grad(out, x, grad)
    mask = _kept(out).float().div_(1.0 - p)
    torch.testing.assert_close(gx, grad * mask, rtol=0, atol=0)


def test_channels_last_and_strided_inputs():
    x = (torch.rand(2, 12, 9, 10) + 0.5).contiguous(memory_format=torch.channels_last)
    mask = parallel_dropout_mask(x, 0.2)
    assert mask.shape == x.shape and mask.stride() == x.stride()  # the input's layout
    strided = (torch.rand(6, 8, 10) + 0.5)[:, ::2]
    torch.manual_seed(3)
    out = ParallelDropout(0.2).train()(strided)
    assert out.shape == strided.shape
    keep = _kept(out)
    torch.testing.assert_close(out, strided * keep.float().div_(0.8), rtol=0, atol=0)


@pytest.mark.parametrize("case", ["eval", "p0", "p1", "inplace", "bfloat16", "float64"])
def test_everything_else_is_nn_dropout(case):
    p = {"p0": 0.0, "p1": 1.0}.get(case, 0.5)
    dtype = {"bfloat16": torch.bfloat16, "float64": torch.float64}.get(case, torch.float32)
    layer, reference = ParallelDropout(p, inplace=case == "inplace"), nn.Dropout(p, inplace=case == "inplace")
    if case == "eval":
        layer.eval(), reference.eval()
    x = torch.rand(4, 100, dtype=dtype) + 0.5
    torch.manual_seed(4)
    expected = reference(x.clone())
    torch.manual_seed(4)
    torch.testing.assert_close(layer(x.clone()), expected, rtol=0, atol=0)


def test_draws_from_pytorchs_generator():
    """One draw of the default generator seeds a mask, so MONAI's set_determinism governs it."""
    torch.manual_seed(8)
    ParallelDropout(0.1).train()(torch.ones(10))
    after = torch.rand(1)
    torch.manual_seed(8)
    assert not torch.equal(torch.rand(1), after)


def test_torchscript():
    layer = ParallelDropout(0.1).eval()
    x = torch.rand(3, 5)
    torch.testing.assert_close(torch.jit.script(layer)(x), x)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_draws_with_its_own_threads():
    """After the parent has drawn with its thread pool, a forked child (e.g. a data-loader worker) draws the same
    numbers with threads of its own (the parent's pool has no threads in the child). The child runs numpy only."""
    expected = np.empty(3 * MASK_CHUNK, dtype=np.float32)
    fill_uniform(expected, 123, threads=2)  # the parent's pool exists now
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: leave without running the parent's teardown, whatever happens
        try:
            got = np.empty_like(expected)
            fill_uniform(got, 123, threads=2)
            os.write(write, b"same" if np.array_equal(got, expected) else b"different")
        finally:
            os._exit(0)
    os.close(write)
    reply = b""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            reply = os.read(read, 64)
            break
        time.sleep(0.05)
    else:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    os.close(read)
    assert reply == b"same", "the forked child did not draw the parent's numbers within 60 s"
