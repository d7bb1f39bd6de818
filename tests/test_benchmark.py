"""The measuring helpers of bundle.benchmark run what they say (no timing is asserted: speed is measured by
scripts/model_stats.py, never by tests)."""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch.nn as nn

from bundle.benchmark import measure_peak_memory, measure_training_step, profile_forward


def test_training_step_trains_in_a_fresh_process():
    seconds, peak_mib = measure_training_step(partial(nn.Conv3d, 1, 2, 3, padding=1), (2, 1, 8, 8, 8), threads=1)
    assert math.isfinite(seconds) and seconds > 0
    assert math.isfinite(peak_mib) and peak_mib >= 0


def test_training_step_reports_a_network_that_cannot_run_its_input():
    # a 2D convolution cannot take a 5D batch: the worker's error must surface, not hang or return a number
    with pytest.raises(RuntimeError, match="failed"):
        measure_training_step(partial(nn.Conv2d, 1, 2, 3, padding=1), (1, 1, 8, 8, 8), threads=1)


def test_profile_names_every_child_module_with_a_share_of_the_pass():
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.GELU(), nn.Conv2d(4, 2, 1))
    operators, modules = profile_forward(model, (1, 1, 32, 32), threads=1, repeats=3)
    assert any("convolution" in name for name, _, _ in operators)
    assert all(0 < share <= 1 and calls >= 1 for _, share, calls in operators)
    assert sorted(name for name, _ in modules) == ["0", "1", "2"]
    # shares of one pass (medians over the passes): not a multiple of it
    assert all(share > 0 for _, share in modules) and sum(share for _, share in modules) < 1.5


def test_peak_memory_reports_a_failed_forward_instead_of_waiting():
    with pytest.raises(RuntimeError, match="failed"):
        measure_peak_memory(partial(nn.Conv2d, 1, 2, 3, padding=1), (1, 1, 8, 8, 8), threads=1)
    assert measure_peak_memory(partial(nn.Conv2d, 1, 2, 3, padding=1), (1, 1, 64, 64), threads=1) >= 0
