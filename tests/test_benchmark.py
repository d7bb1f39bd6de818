"""The measuring helpers of bundle.benchmark run what they say (no timing is asserted: speed is measured by
scripts/model_stats.py, never by tests)."""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch.nn as nn

from bundle.benchmark import measure_training_step


def test_training_step_trains_in_a_fresh_process():
    seconds, peak_mib = measure_training_step(partial(nn.Conv3d, 1, 2, 3, padding=1), (2, 1, 8, 8, 8), threads=1)
    assert math.isfinite(seconds) and seconds > 0
    assert math.isfinite(peak_mib) and peak_mib >= 0


def test_training_step_reports_a_network_that_cannot_run_its_input():
    # a 2D convolution cannot take a 5D batch: the worker's error must surface, not hang or return a number
    with pytest.raises(RuntimeError, match="failed"):
        measure_training_step(partial(nn.Conv2d, 1, 2, 3, padding=1), (1, 1, 8, 8, 8), threads=1)
