"""The segmenter (predictor, Python API, MONAI Label) is the inference config's pipeline: the same labels as
``configs/inference.json`` run through monai.bundle, voxel for voxel."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import torch
from monai.bundle import ConfigWorkflow

from bundle.networks import LMNet
from bundle.segmenter import Segmenter
from tests.conftest import ROOT
from tests.helpers import config_segmenter, lesion_logit


def _half_lesion_network(volume: np.ndarray, task: str = "lgg") -> LMNet:
    """A random LMNet whose head thresholds one decoder feature at its median (at the task's lesion threshold), so
    that about half of the voxels are labelled lesion: a non-trivial map on which two inference paths can be
    compared voxel by voxel."""
    torch.manual_seed(0)
    net = LMNet().eval()
    features: list[torch.Tensor] = []
    handle = net.dec1.register_forward_hook(lambda module, args, out: features.append(out[:, 0].flatten()))
    config_segmenter(net, task)(volume)
    handle.remove()
    median = torch.cat(features).median()
    with torch.no_grad():
        net.head.weight.zero_()
        net.head.weight[1, 0] = 1.0
        net.head.bias.copy_(torch.tensor([0.0, lesion_logit(task) - float(median)]))
    return net


def test_segmenter_matches_bundle_inference(synthetic_lgg, tmp_path):
    torch.manual_seed(0)
    weights = tmp_path / "model.pt"
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "case_image.nii.gz").write_bytes((synthetic_lgg / "SYN_001_image.nii.gz").read_bytes())
    volume = np.asarray(nib.load(inputs / "case_image.nii.gz").dataobj)[..., 1]  # the FLAIR channel
    net = _half_lesion_network(volume)
    torch.save(net.state_dict(), weights)
    wf = ConfigWorkflow(
        config_file=str(ROOT / "configs" / "inference.json"), meta_file=str(ROOT / "configs" / "metadata.json"),
        logging_file=str(ROOT / "configs" / "logging.conf"), workflow_type="infer", bundle_root=str(ROOT),
        dataset_dir=str(inputs), output_dir=str(tmp_path / "out"), ckpt_path=str(weights), num_workers=0,
    )
    wf.initialize()
    wf.run()
    wf.finalize()
    expected = np.asarray(nib.load(tmp_path / "out" / "case_image_seg.nii.gz").dataobj)

    labels, probabilities = Segmenter.from_bundle(ROOT, "lgg", device="cpu", weights=weights)(volume)
    assert labels.shape == expected.shape and probabilities.shape == (2, *expected.shape)
    assert 0 < expected.sum() < expected.size  # random weights still give a non-trivial map to compare
    assert np.array_equal(labels, expected)


def test_segmenter_matches_bundle_inference_on_a_2d_image(synthetic_busi, tmp_path):
    """The BUSI task on a PNG: predictor == ``monai.bundle run`` (busi overlay), pixel for pixel."""
    from PIL import Image

    from bundle.config import bundle_run_command

    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "img.png").write_bytes((synthetic_busi / "benign" / "benign_1.png").read_bytes())
    image = np.asarray(Image.open(inputs / "img.png"), dtype=np.float32)
    weights = tmp_path / "busi.pt"
    torch.save(_half_lesion_network(image, "busi").state_dict(), weights)
    cmd = bundle_run_command(ROOT, "busi", "inference", {"dataset_dir": str(inputs), "output_dir": str(tmp_path / "o"),
                                                         "ckpt_path": str(weights), "num_workers": 0})
    import subprocess

    result = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    expected = np.asarray(Image.open(tmp_path / "o" / "img_seg.png")) // 255
    labels, _ = Segmenter.from_bundle(ROOT, "busi", device="cpu", weights=weights)(image)
    assert labels.shape == expected.shape
    assert 0 < expected.sum() < expected.size, "the random network gives a trivial map; nothing is compared"
    assert np.array_equal(labels, expected)


def test_predictor_matches_bundle_inference_on_a_dicom_series(tmp_path):
    """A DICOM series through the predictor == ``monai.bundle run`` (ITK reads the series folder), voxel for voxel:
    the predictor's label is in the series' (rows, cols, slices) layout, the bundle's in ITK's (cols, rows, slices),
    on the same physical grid."""
    import subprocess

    from bundle.config import bundle_run_command
    from bundle.predictor import Predictor
    from tests.io.helpers import write_mr_series

    series = write_mr_series(tmp_path / "in" / "series", rows=40, cols=48, slices=6)
    weights = tmp_path / "w.pt"
    torch.save(_half_lesion_network(series.pixels.swapaxes(0, 1).astype(np.float32)).state_dict(), weights)
    settings = {"tta_flips": [], "keep_largest_component": False, "num_workers": 0}
    cmd = bundle_run_command(ROOT, "lgg", "inference", {**settings, "dataset_dir": str(tmp_path / "in"),
                                                        "output_dir": str(tmp_path / "run"), "ckpt_path": str(weights)})
    result = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    bundle_label = nib.load(tmp_path / "run" / "series_seg.nii.gz")
    predictor = Predictor.from_bundle(ROOT, "lgg", "cpu", weights, settings, formats=("nifti",), quiet=True)
    (record,) = predictor.predict_folder(tmp_path / "in", tmp_path / "pred")
    assert record.status == "done", record.error
    label = nib.load(tmp_path / "pred" / record.outputs[0])
    expected = np.asarray(bundle_label.dataobj)
    assert 0 < expected.sum() < expected.size, "a trivial map: nothing is compared"
    assert np.array_equal(np.asarray(label.dataobj).swapaxes(0, 1), expected)
    np.testing.assert_allclose(label.affine[:, [1, 0, 2, 3]], bundle_label.affine, atol=1e-4)
