"""scripts.gpu_check: skips with a reason without CUDA; its steps run for real (on the CPU here, on CUDA where
present)."""

from __future__ import annotations

import logging

import pytest
import torch

from scripts import gpu_check


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: the check runs instead of skipping")
def test_skips_with_the_reason_without_cuda(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        assert gpu_check.main(["--output", str(tmp_path / "out")]) == 0
    assert "GPU check skipped: no CUDA device visible to PyTorch" in caplog.text
    assert not (tmp_path / "out").exists()  # nothing was run


def _check_report(out):
    text = (out / "gpu_check.md").read_text()
    for step in ("train_amp", "inference", "ddp", "latency"):
        assert f"| {step} | ok |" in text, text
    assert "| LM-Net (deployed) | fp32 | 1 |" in text and "MONAI BasicUNet" in text
    return text


def test_every_step_runs_on_the_cpu(tmp_path):
    out = tmp_path / "cpu"
    assert gpu_check.main(["--device", "cpu", "--epochs", "1", "--latency-size", "64", "--output", str(out)]) == 0
    _check_report(out)
    assert (out / "train" / "checkpoints" / "model.pt").is_file() and (out / "ddp" / "checkpoints").is_dir()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_every_step_runs_on_the_gpu(tmp_path):
    out = tmp_path / "cuda"
    assert gpu_check.main(["--output", str(out), "--latency-size", "64"]) == 0
    assert "fp16 autocast" in _check_report(out)
