"""Shared fixtures of the input/output tests."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def io_tests_use_one_thread(one_torch_thread):
    """Every test here runs with one torch intra-op thread (see ``tests/conftest.py``)."""
    yield
