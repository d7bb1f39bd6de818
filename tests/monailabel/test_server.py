"""The bundle's MONAI Label app (bundle/monailabel) in a real MONAI Label 0.8.5 server on 127.0.0.1.

The server runs from the MONAI Label environment (.venv-monailabel) on a copy of the bundle whose weights are
seeded random ones with an input-dependent output: predictions that equal ``python -m monai.bundle run`` voxel for
voxel prove that the server loaded exactly those weights. The tests run in order; the training test comes last
because it changes the served weights.
"""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch

from bundle.checkpoints import read_state_dict
from bundle.networks import LMNet
from bundle.networks.ensemble import member_state_dict

from .conftest import Workspace, start_server
from .helpers import assert_same_label, read_label, run_bundle_inference

CASES = [  # (model, task of the reference, image id, suffix of the returned label)
    ("lmnet_lgg", "lgg", "vol_a", ".nii.gz"),
    ("lmnet_lgg", "lgg", "us_c", ".png"),
    ("lmnet_busi", "busi", "us_c", ".png"),
    ("lmnet_lgg3d", "lgg3d", "vol_a", ".nii.gz"),  # the 3D network on the whole volume (sliding window)
]


@pytest.fixture(scope="module")
def server(workspace: Workspace):
    server = start_server(workspace, "lmnet", "lmnet_server")
    yield server
    server.stop()


def _assert_matches(label, affine, reference, what: str, server) -> None:
    expected, expected_affine = reference
    assert_same_label(label, expected, what, server)
    assert 0.05 < expected.mean() < 0.95, f"{what}: the reference is nearly uniform, the comparison proves little"
    if expected_affine is not None:
        np.testing.assert_allclose(affine, expected_affine, atol=1e-4, err_msg=f"{what}: affine")


def test_info_lists_models_with_labels(server):
    info = server.get_json("/info/")
    # every task with weights is served (kvasir has none here: it trains, a trainer, but is not served)
    assert set(info["models"]) == {"lmnet_lgg", "lmnet_lgg3d", "lmnet_busi"}, info["models"].keys()
    for name, dimension in (("lmnet_lgg", 3), ("lmnet_lgg3d", 3), ("lmnet_busi", 2)):
        model = info["models"][name]
        assert model["labels"] == {"lesion": 1}
        assert model["type"] == "segmentation"
        assert model["dimension"] == dimension
    assert info["labels"] == ["lesion"]
    assert set(info["trainers"]) == {"lmnet_lgg", "lmnet_lgg3d", "lmnet_busi", "lmnet_kvasir"}
    assert info["datastore"]["total"] == 3


@pytest.mark.parametrize("model, task, image_id, suffix", CASES)
def test_infer_datastore_image_matches_bundle(server, workspace, references, tmp_path, model, task, image_id, suffix):
    data = server.post(f"/infer/{model}?image={image_id}&output=image")
    label, affine = read_label(data, suffix, tmp_path / f"label{suffix}")
    _assert_matches(label, affine, references[(task, image_id)], f"{model} on {image_id}", server)


@pytest.mark.parametrize("model, task, image_id", [("lmnet_lgg", "lgg", "vol_b"), ("lmnet_busi", "busi", "us_c")])
def test_infer_uploaded_file_matches_bundle(server, workspace, references, tmp_path, model, task, image_id):
    source = workspace.inputs[image_id]
    suffix = ".png" if source.suffix == ".png" else ".nii.gz"
    data = server.post(f"/infer/{model}?output=image", files={"file": source})
    label, affine = read_label(data, suffix, tmp_path / f"label{suffix}")
    _assert_matches(label, affine, references[(task, image_id)], f"{model} on uploaded {source.name}", server)


def test_infer_dicom_series_folder(server, workspace, references, tmp_path):
    """A DICOM series folder (an absolute path as image id) is segmented slice by slice; the label is a NIfTI on
    the series' grid, equal to the bundle's label of the series converted to NIfTI."""
    data = server.post(f"/infer/lmnet_lgg?image={workspace.dicom_series}&output=image")
    label, affine = read_label(data, ".nii.gz", tmp_path / "label.nii.gz")
    assert label.shape == (48, 40, 6)  # columns, rows, slices: ITK's index order
    _assert_matches(label, affine, references[("lgg", "series_1")], "lmnet_lgg on a DICOM series", server)


def test_infer_json_names_labels(server):
    params = json.loads(server.post("/infer/lmnet_lgg?image=vol_a&output=json"))
    assert params["label_names"] == {"lesion": 1}


def test_train_fine_tunes_from_shipped_weights(server, workspace, tmp_path):
    shipped = workspace.bundle_root / "models" / "model.pt"
    stats = json.loads(server.post("/train/lmnet_lgg?run_sync=true", body_json={"max_epochs": 1, "val_split": 0.5}))
    checkpoint = workspace.bundle_root / "outputs" / "monailabel" / "lmnet_lgg" / "model.pt"
    assert stats["checkpoint"] == str(checkpoint), stats
    assert stats["init_weights"] == str(shipped)
    assert (stats["epochs"], stats["train_items"], stats["val_items"]) == (1, 1, 1), stats
    assert checkpoint.is_file(), f"no checkpoint at {checkpoint}\n{server.log_tail()}"

    # the shipped file is an ensemble: fine-tuning trains its first member, one network
    tuned, start = read_state_dict(checkpoint), member_state_dict(read_state_dict(shipped), 0)
    LMNet(spatial_dims=2, in_channels=1, out_channels=2).load_state_dict(tuned, strict=True)
    assert any(not torch.equal(tuned[k], start[k]) for k in start), "fine-tuning left every weight unchanged"

    info = server.get_json("/info/")
    assert info["models"]["lmnet_lgg"]["weights"] == str(checkpoint), "the fine-tuned weights are not served"
    assert info["train_stats"]["lmnet_lgg"]["epochs"] == 1
    label, _ = read_label(server.post("/infer/lmnet_lgg?image=vol_a&output=image"), ".nii.gz", tmp_path / "l.nii.gz")
    # what is served is what the bundle computes with the fine-tuned checkpoint, voxel for voxel
    run_bundle_inference(workspace.bundle_root, "lgg", workspace.inputs["vol_a"],
                         tmp_path / "tuned", workspace.env, ["--ckpt_path", str(checkpoint)])
    expected = np.asarray(nib.load(tmp_path / "tuned" / "vol_a_seg.nii.gz").dataobj)
    assert_same_label(label, expected, "lmnet_lgg with the fine-tuned weights", server)
