"""The Kvasir-SEG overlay (configs/kvasir/): RGB colonoscopy images with JPEG masks, train -> evaluate -> infer
through ConfigWorkflow on synthetic images the test writes; the predictor reads RGB for it and gives the inference
config's labels; the colour jitter augmentation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from monai.bundle import ConfigWorkflow
from PIL import Image

from bundle.data.datalist import build_datalist, write_datalist
from bundle.data.synthetic import write_synthetic_kvasir
from bundle.predictor import Predictor
from bundle.transforms import RandColorJitterd
from tests.conftest import ROOT
from tests.helpers import run_workflow

CONFIGS = ROOT / "configs"
FAST = {"roi_size": [64, 64], "num_workers": 0, "batch_size": 4}


@pytest.fixture(scope="module")
def kvasir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("kvasir")
    data = write_synthetic_kvasir(tmp / "data", n_cases=8)
    write_datalist(build_datalist(data, fractions=(0.5, 0.25, 0.25)), tmp / "datalist.json")
    wf = run_workflow(["train.json", "kvasir/train.json"], "train", dataset_dir=str(data),
                      output_dir=str(tmp / "train"), datalist=str(tmp / "datalist.json"), max_epochs=2, val_interval=1,
                      **FAST)
    assert wf.parser.get_parsed_content("network_def#in_channels") == 3
    return tmp, data, tmp / "train" / "checkpoints" / "model.pt"


def test_jpeg_masks_are_thresholded_at_half_range(kvasir):
    _, data, _ = kvasir
    mask = np.asarray(Image.open(next((data / "masks").iterdir())))
    assert ((mask > 0) & (mask < 128)).any()  # JPEG noise that a 0.5 threshold would call polyp
    parser = ConfigWorkflow(config_file=[str(CONFIGS / "train.json"), str(CONFIGS / "kvasir/train.json")],
                            workflow_type="train", bundle_root=str(ROOT), dataset_dir=str(data), **FAST).parser
    loaded = parser.get_parsed_content("validate#preprocessing")(
        {"image": str(next((data / "images").iterdir())), "label": str(next((data / "masks").iterdir()))})
    assert loaded["image"].shape == (3, 64, 64) and set(torch.unique(loaded["label"]).tolist()) == {0.0, 1.0}
    expected = np.asarray(Image.fromarray(mask[..., 0]).resize((64, 64), Image.NEAREST)) > 127.5
    assert (loaded["label"][0].numpy() == expected).mean() > 0.98


def test_trains_evaluates_and_infers(kvasir):
    tmp, data, checkpoint = kvasir
    assert checkpoint.is_file()
    run_workflow(["train.json", "kvasir/train.json", "evaluate.json"], "eval", dataset_dir=str(data),
              output_dir=str(tmp / "eval"), datalist=str(tmp / "datalist.json"), ckpt_path=str(checkpoint), **FAST)
    summary = json.loads((tmp / "eval" / "summary.json").read_text())
    assert 0.0 <= summary["dice/all"]["mean"] <= 1.0
    inputs = tmp / "inputs"
    inputs.mkdir()
    (inputs / "frame.jpg").write_bytes(next((data / "images").iterdir()).read_bytes())
    run_workflow(["inference.json", "kvasir/inference.json"], "infer", dataset_dir=str(inputs),
              output_dir=str(tmp / "out"), ckpt_path=str(checkpoint), **FAST)
    written = np.asarray(Image.open(tmp / "out" / "frame_seg.png"))
    rgb = np.asarray(Image.open(inputs / "frame.jpg"))
    assert written.shape == rgb.shape[:2]
    predictor = Predictor.from_bundle(ROOT, "kvasir", "cpu", checkpoint, FAST)
    assert predictor.channel_index is None
    labels, _ = predictor.predict_array(rgb)
    np.testing.assert_array_equal(labels > 0, written > 0)
    records = predictor.predict_folder(inputs, tmp / "predicted")
    assert [r.status for r in records] == ["done"]
    png = np.asarray(Image.open(tmp / "predicted" / "frame_label.png"))
    np.testing.assert_array_equal(png > 0, written > 0)
    with pytest.raises(ValueError, match="RGB images"):
        predictor.predict_array(rgb[..., 0])


def test_color_jitter():
    x = torch.rand(3, 16, 16)
    assert torch.equal(RandColorJitterd("image", prob=0.0)({"image": x})["image"], x)
    jitter = RandColorJitterd("image", prob=1.0)
    jitter.set_random_state(0)
    out = jitter({"image": x})["image"]
    assert out.shape == x.shape and 0 <= out.min() and out.max() <= 1 and not torch.allclose(out, x)
    grey = torch.full((3, 4, 4), 0.5)  # no chroma: saturation and hue leave it grey
    out = RandColorJitterd("image", brightness=0, contrast=0, prob=1.0)({"image": grey})["image"]
    torch.testing.assert_close(out, grey, atol=1e-5, rtol=0)
    single = torch.rand(1, 8, 8)
    assert torch.equal(RandColorJitterd("image", prob=1.0)({"image": single})["image"], single)
    with pytest.raises(ValueError, match="hue"):
        RandColorJitterd("image", hue=0.7)
