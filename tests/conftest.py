"""Shared fixtures: deterministic synthetic datasets written once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bundle.data.synthetic import write_synthetic_busi, write_synthetic_lgg

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def synthetic_lgg(tmp_path_factory) -> Path:
    """6 small synthetic volumes (48 x 48 x 8 x 3) in the LGG layout."""
    return write_synthetic_lgg(tmp_path_factory.mktemp("lgg"), n_cases=6, shape=(48, 48, 8))


@pytest.fixture(scope="session")
def synthetic_busi(tmp_path_factory) -> Path:
    """10 small synthetic ultrasound images (8 with a lesion, 2 normal) in the BUSI layout."""
    return write_synthetic_busi(tmp_path_factory.mktemp("busi"), n_lesion=8, n_normal=2, shape=(40, 52))


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op thread for modules whose networks are tiny: on a busy 2-core CPU a second OpenMP thread that is
    not scheduled stalls every operator. Restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
