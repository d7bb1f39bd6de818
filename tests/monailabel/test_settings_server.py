"""The inference config's named settings reach MONAI Label (``--conf config_overrides '<JSON>'``) and change its
labels exactly as they change ``python -m monai.bundle run``'s."""

from __future__ import annotations

import json

import numpy as np
import pytest

from .conftest import Workspace, start_server
from .helpers import assert_same_label, read_label, run_bundle_inference

SETTINGS = {"tta_flips": [], "roi_size": [192, 192], "keep_largest_component": True, "min_lesion_size": 20,
            "lesion_threshold": 0.4, "intensity_percentiles": [2.0, 98.0]}


@pytest.fixture(scope="module")
def tuned_server(workspace: Workspace):
    server = start_server(workspace, "lmnet", "lmnet_settings_server",
                          ("--conf", "config_overrides", json.dumps(SETTINGS)))
    yield server
    server.stop()


def _bundle_label(workspace: Workspace, out, weights: str, extra: list[str]):
    run_bundle_inference(workspace.bundle_root, "lgg", workspace.inputs["vol_a"], out, workspace.env,
                         ["--ckpt_path", weights, *extra])
    return read_label((out / "vol_a_seg.nii.gz").read_bytes(), ".nii.gz", out / "copy.nii.gz")[0]


def test_settings_change_the_served_label_as_they_change_the_bundle(tuned_server, workspace, tmp_path):
    weights = tuned_server.get_json("/info/")["models"]["lmnet_lgg"]["weights"]  # shipped or fine-tuned ones
    data = tuned_server.post("/infer/lmnet_lgg?image=vol_a&output=image")
    label, _ = read_label(data, ".nii.gz", tmp_path / "served.nii.gz")
    extra = [arg for key, value in SETTINGS.items() for arg in (f"--{key}", json.dumps(value))]
    expected = _bundle_label(workspace, tmp_path / "bundle", weights, extra)
    default = _bundle_label(workspace, tmp_path / "default", weights, [])
    assert_same_label(label, expected, "lmnet_lgg with the settings", tuned_server)
    assert not np.array_equal(expected, default), "the settings changed nothing: the comparison proves little"
