"""The 3D task overlay (configs/lgg3d/): train -> evaluate -> infer through ``python -m monai.bundle run`` on
synthetic volumes thinner than a window (padded), check_properties, verify_net_in_out, and the predictor's labels
equal to the inference config's."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

from bundle.data.datalist import build_datalist, write_datalist
from bundle.demo import bundle_run
from bundle.predictor import Predictor
from tests.conftest import ROOT
from tests.helpers import checked_workflow

# a small 3D network and windows, so the whole chain runs in about a minute on 2 CPU threads
SMALL = {"roi_size": [32, 32], "patch_size": [32, 32, 16], "num_workers": 0, "sw_batch_size": 2,
         "network_def#features": [8, 16, 16, 32, 32], "network_def#lft_heads": 2, "network_def#gft_heads": 8}
EVALUATE = [str(ROOT / "configs" / "evaluate.json")]


@pytest.fixture(scope="module")
def trained(synthetic_lgg, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lgg3d")
    write_datalist(build_datalist(synthetic_lgg, fractions=(0.5, 0.17, 0.33)), tmp / "datalist.json")
    bundle_run("lgg3d", "train", {"dataset_dir": synthetic_lgg, "output_dir": tmp / "train",
                                  "datalist": tmp / "datalist.json", "max_epochs": 2, "val_interval": 1,
                                  "batch_size": 2, "num_samples": 2, **SMALL}, tmp / "train.log")
    return tmp, tmp / "train" / "checkpoints" / "model.pt"


@pytest.mark.parametrize("kind, files", [("train", ["train.json", "lgg3d/train.json"]),
                                         ("infer", ["inference.json", "lgg3d/inference.json"])])
def test_workflow_properties(trained, synthetic_lgg, kind, files):
    tmp, checkpoint = trained
    data = ({"dataset_dir": str(synthetic_lgg), "datalist": str(tmp / "datalist.json")} if kind == "train"
            else {"dataset_dir": str(synthetic_lgg / "SYN_000_image.nii.gz"), "ckpt_path": str(checkpoint)})
    wf = checked_workflow(files, kind, output_dir=str(tmp / f"properties_{kind}"), **data, **SMALL)
    assert wf.parser.get_parsed_content("network_def").spatial_dims == 3


def test_trains_and_evaluates(trained, synthetic_lgg):
    tmp, checkpoint = trained
    assert checkpoint.is_file()
    assert "Epoch: 2/2" in (tmp / "train.log").read_text()
    bundle_run("lgg3d", "train", {"dataset_dir": synthetic_lgg, "output_dir": tmp / "eval",
                                  "datalist": tmp / "datalist.json", "ckpt_path": checkpoint, **SMALL},
               tmp / "evaluate.log", EVALUATE)
    summary = json.loads((tmp / "eval" / "summary.json").read_text())
    assert 0.0 <= summary["dice/all"]["mean"] <= 1.0


def test_infers_whole_volumes_like_the_predictor(trained, synthetic_lgg):
    tmp, checkpoint = trained
    inputs = tmp / "inputs"
    inputs.mkdir(exist_ok=True)
    source = synthetic_lgg / "SYN_000_image.nii.gz"
    (inputs / "vol_image.nii.gz").write_bytes(source.read_bytes())
    bundle_run("lgg3d", "inference", {"dataset_dir": inputs, "output_dir": tmp / "out", "ckpt_path": checkpoint,
                                      **SMALL}, tmp / "inference.log")
    written = nib.load(tmp / "out" / "vol_image_seg.nii.gz")
    image = nib.load(source)
    assert written.shape == image.shape[:3] and np.allclose(written.affine, image.affine)
    predictor = Predictor.from_bundle(ROOT, "lgg3d", "cpu", checkpoint, SMALL)
    labels, probabilities = predictor.predict_array(np.asarray(image.dataobj))
    assert probabilities.shape == (2, *image.shape[:3])
    np.testing.assert_array_equal(labels, np.asarray(written.dataobj))


def test_refuses_2d_images(trained):
    _, checkpoint = trained
    predictor = Predictor.from_bundle(ROOT, "lgg3d", "cpu", checkpoint, SMALL)
    with pytest.raises(ValueError, match="batch of volumes"):
        predictor.predict_array(np.zeros((40, 40), dtype=np.float32))


def test_verify_net_in_out():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "monai.bundle", "verify_net_in_out", "network_def", "--meta_file",
         "configs/metadata.json", "--config_file", "['configs/inference.json', 'configs/lgg3d/inference.json']",
         "--bundle_root", ".", "--_meta_#network_data_format#inputs#image#spatial_shape", "[32, 32, 16]",
         "--_meta_#network_data_format#inputs#image#num_channels", "1",  # the metadata describes the 2.5D LGG model
         "--network_def#features", "[8, 16, 16, 32, 32]", "--network_def#lft_heads", "2",
         "--network_def#gft_heads", "8"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "data shape of network is verified with no error" in result.stdout + result.stderr
