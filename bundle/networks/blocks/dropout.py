"""Dropout whose CPU training mask is drawn by several threads.

``nn.Dropout`` on a CPU tensor draws its keep mask with ``bernoulli_`` from PyTorch's single Mersenne-Twister
generator, one element after another: at LM-Net's full-resolution transformer MLP (16 x 128 x 128 x 24 values a
step) that draw costs several times the rest of the dropout. :class:`ParallelDropout` draws the same kind of mask
(every value kept independently with probability ``1 - p``) from uniform float32 numbers made by numpy's PCG64
generators, one stream per fixed-size chunk of the tensor, the chunks shared out over ``torch.get_num_threads()``
threads (numpy releases the GIL while it fills an array). The streams are seeded from one 63-bit number taken from
PyTorch's default generator, so ``torch.manual_seed`` (and MONAI's ``set_determinism``) make the masks
reproducible, and the chunking does not depend on the thread count. Given the mask, the arithmetic is PyTorch's
own: ``x * (keep / (1 - p))``.

A value is kept when its uniform number ``u`` (a multiple of 2^-24 in [0, 1)) is at least ``p``: the keep
probability is ``1 - ceil(p * 2^24) / 2^24``, within 2^-24 of ``1 - p``.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["ParallelDropout", "parallel_dropout_mask", "parallel_pass", "fill_uniform", "MASK_CHUNK"]

MASK_CHUNK = 1 << 19  # values drawn by one PCG64 stream; fixed, so a mask does not depend on the thread count

_pools: dict[int, ThreadPoolExecutor] = {}
if hasattr(os, "register_at_fork"):  # a forked child (e.g. a data-loader worker) has none of the parent's threads
    os.register_at_fork(after_in_child=_pools.clear)


def _pool(workers: int) -> ThreadPoolExecutor:
    if workers not in _pools:
        _pools[workers] = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="dropout-mask")
    return _pools[workers]


def _fill_chunk(out: np.ndarray, seed: int, chunk: int) -> None:
    stream = np.random.Generator(np.random.PCG64(np.random.SeedSequence((seed, chunk))))
    stream.random(out=out[chunk * MASK_CHUNK : (chunk + 1) * MASK_CHUNK], dtype=np.float32)


def fill_uniform(out: np.ndarray, seed: int, threads: int) -> None:
    """Fill the 1D float32 array ``out`` with uniform numbers in [0, 1): chunk i from the PCG64 stream seeded by
    (``seed``, i), the chunks shared over up to ``threads`` threads (the values do not depend on ``threads``)."""
    chunks = math.ceil(out.size / MASK_CHUNK)
    workers = min(chunks, max(1, threads))
    if workers <= 1:
        for chunk in range(chunks):
            _fill_chunk(out, seed, chunk)
    else:
        list(_pool(workers).map(lambda c: _fill_chunk(out, seed, c), range(chunks)))


def parallel_dropout_mask(like: torch.Tensor, p: float) -> torch.Tensor:
    """The scaled keep mask of a dropout with probability ``p`` (0 <= p < 1) for the float32 CPU tensor ``like``: of
    ``like``'s shape, dtype and (when dense) memory layout, each value ``1 / (1 - p)`` (kept) or 0 (dropped), kept
    independently with probability ``1 - p``. One draw from PyTorch's default generator seeds it."""
    seed = int(torch.randint(0, 2**63 - 1, (1,)).item())
    mask = torch.empty_like(like)  # a float32 CPU tensor in like's layout when it is dense
    flat = torch.empty(0, dtype=torch.float32).set_(mask.untyped_storage())  # the same memory, in memory order
    fill_uniform(flat.numpy(), seed, torch.get_num_threads())
    flat.ge_(p).div_(1.0 - p)  # PyTorch's dropout: the keep mask (1.0 / 0.0) divided by 1 - p
    return mask


@torch.jit.unused
def parallel_pass(x: torch.Tensor, p: float, training: bool, inplace: bool) -> bool:
    """Whether a dropout with probability ``p`` (in training mode or not, in place or not) drops values of ``x``
    through :func:`parallel_dropout_mask`: a non-empty CPU float32 tensor, 0 < p < 1, training, not in place."""
    return (training and 0.0 < p < 1.0 and not inplace and x.device.type == "cpu" and x.dtype == torch.float32
            and x.numel() > 0)


@torch.jit.unused
def _parallel_dropout(x: torch.Tensor, p: float) -> torch.Tensor:
    return x * parallel_dropout_mask(x, p)


class ParallelDropout(nn.Dropout):
    """``nn.Dropout`` whose training mask on CPU float32 tensors is drawn by several threads (see the module doc).

    Everything else (eval mode, ``p`` of 0 or 1, ``inplace``, CUDA and other devices, other dtypes, TorchScript and
    tracing) runs ``nn.Dropout.forward`` unchanged.

    Args: as ``nn.Dropout``.

    Shapes: any -> the same.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_scripting() or torch.jit.is_tracing():  # TorchScript compiles nothing after this return
            return F.dropout(x, self.p, self.training, self.inplace)
        if parallel_pass(x, self.p, self.training, self.inplace):
            return _parallel_dropout(x, self.p)
        return F.dropout(x, self.p, self.training, self.inplace)
