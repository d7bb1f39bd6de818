"""Shared fixtures of the input/output tests."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True, scope="package")
def one_torch_thread():
    """One intra-op thread: the tests' networks are tiny, and on a shared, busy CPU a second OpenMP thread that is
    not scheduled stalls every operator."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
