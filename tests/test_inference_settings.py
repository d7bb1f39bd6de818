"""Every named inference setting has the same effect in ``monai.bundle run`` (the evaluator), ``monai.bundle run
predict`` (the predictor entry of the config) and ``scripts.predict``: the labels agree voxel for voxel, and differ
from those of the default setting (so the setting is not silently ignored anywhere)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from bundle.config import bundle_run_command
from bundle.networks import LMNet
from scripts import predict
from tests.conftest import ROOT

BASE = {"roi_size": [64, 64], "tta_flips": [1], "keep_largest_component": False, "min_lesion_size": 0,
        "lesion_threshold": 0.5, "num_workers": 0}
VARIANTS = {  # setting -> value other than the base's
    "roi_size": [48, 48],
    "tta_flips": [],
    "intensity_percentiles": [10.0, 90.0],
    "keep_largest_component": True,
    "min_lesion_size": 40,
    "lesion_threshold": 0.3,
    "lesion_seed_threshold": 0.8,
    "channel_index": 0,
    "context_slices": 1,
}


def _weights(path: Path, in_channels: int, volume: np.ndarray) -> Path:
    """Random LMNet weights whose head marks the voxels where one decoder feature is in its top 15 % as lesion
    (scattered components of several sizes), so every setting has something to change."""
    torch.manual_seed(in_channels)
    net = LMNet(in_channels=in_channels).eval()
    features = []
    handle = net.dec1.register_forward_hook(lambda m, a, out: features.append(out[:, 0].flatten()))
    x = torch.as_tensor(volume / volume.max(), dtype=torch.float32).permute(2, 0, 1)[:, None]
    with torch.no_grad():
        net(torch.nn.functional.interpolate(x.repeat(1, in_channels, 1, 1), size=(64, 64)))
        handle.remove()
        net.head.weight.zero_()
        # scaled so that lesion probabilities spread over (0, 1) (the feature varies by a few hundredths)
        net.head.weight[1, 0] = 100.0
        net.head.bias.copy_(torch.tensor([0.0, -100.0 * float(torch.cat(features).quantile(0.85))]))
    torch.save(net.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("settings")
    rng = np.random.default_rng(0)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in (56, 48, 6)], indexing="ij"))
    base = 100 + 80 * np.exp(-((grid ** 2).sum(0)) * 3) + rng.normal(0, 25, (56, 48, 6))
    volume = np.stack([base * 0.5 + 40, base, 300 - base], axis=-1).clip(0, 255).astype(np.uint8)  # 3 channels
    inputs = root / "in"
    inputs.mkdir()
    nib.save(nib.Nifti1Image(volume, np.eye(4)), inputs / "case_image.nii.gz")
    weights = {1: _weights(root / "w1.pt", 1, volume[..., 1].astype(np.float32)),
               3: _weights(root / "w3.pt", 3, volume[..., 1].astype(np.float32))}
    return root, inputs, weights


def _overrides(setting: str | None, weights: dict) -> dict:
    values = dict(BASE)
    if setting is not None:
        values[setting] = VARIANTS[setting]
    values["ckpt_path"] = str(weights[3 if values.get("context_slices") else 1])
    return values


def _bundle(run_id: str | None, values: dict, inputs: Path, out: Path) -> np.ndarray:
    cmd = bundle_run_command(ROOT, "lgg", "inference", {**values, "dataset_dir": str(inputs), "output_dir": str(out)},
                             run_id=run_id)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(cmd, cwd=out.parent, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    name = "case_image_seg.nii.gz" if run_id is None else "case_image_label.nii.gz"
    return np.asarray(nib.load(out / name).dataobj)


def _scripts_predict(values: dict, inputs: Path, out: Path) -> np.ndarray:
    argv = ["--input", str(inputs), "--output", str(out), "--formats", "nifti", "--quiet", "--device", "cpu",
            "--weights", values["ckpt_path"]]
    for key, value in values.items():
        if key in ("ckpt_path", "num_workers"):
            continue
        argv += [f"--{key}", json.dumps(value)]
    assert predict.main(argv) == 0
    return np.asarray(nib.load(out / "case_image_label.nii.gz").dataobj)


@pytest.fixture(scope="module")
def base_labels(setup):
    root, inputs, weights = setup
    return _bundle(None, _overrides(None, weights), inputs, root / "base")


@pytest.mark.parametrize("setting", sorted(VARIANTS))
def test_setting_has_the_same_effect_in_every_inference_path(setup, base_labels, setting):
    root, inputs, weights = setup
    values = _overrides(setting, weights)
    evaluator = _bundle(None, values, inputs, root / f"{setting}_run")
    entry = _bundle("predict", values, inputs, root / f"{setting}_predict")
    cli = _scripts_predict(values, inputs, root / f"{setting}_cli")
    assert 0 < evaluator.sum() < evaluator.size
    assert np.array_equal(entry, evaluator), f"monai.bundle run predict ignores or changes {setting}"
    assert np.array_equal(cli, evaluator), f"scripts.predict ignores or changes {setting}"
    assert not np.array_equal(evaluator, base_labels), f"{setting} changed nothing"


def test_base_settings_agree_too(setup, base_labels):
    root, inputs, weights = setup
    values = _overrides(None, weights)
    assert np.array_equal(_scripts_predict(values, inputs, root / "base_cli"), base_labels)
    assert sys.executable  # the subprocesses above ran with this interpreter
