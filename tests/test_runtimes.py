"""The OpenVINO runtime and bfloat16 precision (bundle.runtimes): choices checked, agreement with PyTorch fp32 on a
real-shaped input with the shipped weights, the converted model cached beside the weights, and the same labels from
the config's evaluator, its predictor entry and the Segmenter."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from bundle.checkpoints import sha256_file
from bundle.config import bundle_run_command
from bundle.runtimes import OpenVINONetwork, batch_bucket, check_runtime, network_code_digest, runtime_network
from bundle.segmenter import Segmenter
from tests.conftest import ROOT, SHARED_DATA
from tests.helpers import randomize_batchnorm

pytest.importorskip("openvino")


def _flair_slab() -> np.ndarray:
    """Four 256 x 256 FLAIR slices through a lesion: from a shared LGG patient when the data is here, else a
    synthetic volume of the same shape and value range."""
    case = SHARED_DATA / "lgg" / "TCGA_CS_4941_19960909_image.nii.gz"
    if case.is_file():
        label = np.asarray(nib.load(str(case).replace("_image", "_label")).dataobj)
        middle = int(np.argmax(label.reshape(-1, label.shape[-1]).sum(0)))
        return np.asarray(nib.load(case).dataobj)[..., middle - 2 : middle + 2].astype(np.float32)
    from bundle.data.synthetic import make_synthetic_volume

    image, _ = make_synthetic_volume((256, 256, 4), 3)
    image = np.asarray(image[..., 1], dtype=np.float32)  # the FLAIR channel
    return 255 * (image - image.min()) / (image.max() - image.min())


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A copy of the shipped LGG weights in a folder of its own (the OpenVINO cache goes beside it)."""
    folder = tmp_path_factory.mktemp("weights")
    return shutil.copy(ROOT / "models" / "model.pt", folder / "model.pt")


def test_choices_are_checked():
    with pytest.raises(ValueError, match="runtime must be one of"):
        check_runtime("tensorrt", "fp32")
    with pytest.raises(ValueError, match="precision must be one of"):
        check_runtime("torch", "fp16")
    with pytest.raises(ValueError, match="CPU settings; on CUDA"):
        runtime_network(torch.nn.Identity(), "openvino", "fp32", device=torch.device("cuda"))
    with pytest.raises(ValueError, match="runtime must be one of"):
        Segmenter.from_bundle(ROOT, "lgg", device="cpu", overrides={"runtime": "onnx"})


@pytest.fixture(scope="module")
def reference(weights):
    """PyTorch fp32 labels and scores of the real-shaped slab."""
    slab = _flair_slab()
    return slab, *Segmenter.from_bundle(ROOT, "lgg", "cpu", weights, {"tta_flips": []})(slab)


@pytest.mark.parametrize(("runtime", "precision"), [("openvino", "fp32"), ("openvino", "bf16"), ("torch", "bf16")])
def test_agrees_with_pytorch_fp32_on_a_real_shaped_input(weights, reference, runtime, precision):
    slab, reference_labels, reference_scores = reference
    segmenter = Segmenter.from_bundle(ROOT, "lgg", "cpu", weights,
                                      {"tta_flips": [], "runtime": runtime, "precision": precision})
    # the setting is applied, not ignored (else the agreement below would hold trivially)
    assert type(segmenter.network).__name__ == ("OpenVINONetwork" if runtime == "openvino" else "_TorchBF16")
    labels, scores = segmenter(slab)
    assert reference_labels.sum() > 100  # a lesion is found, so the agreement means something
    assert (labels == reference_labels).mean() >= 0.999
    both = 2 * np.logical_and(labels, reference_labels).sum() / (labels.sum() + reference_labels.sum())
    assert both >= 0.99
    if precision == "fp32":
        assert np.abs(scores - reference_scores).max() < 1e-3


def test_openvino_fp32_is_exact_against_the_training_form():
    """OpenVINO fp32 of the deployed form gives the training form's logits (randomized batch norm, unit-scale logits)
    to 1e-4, as the deployed PyTorch form does: it is an exact fp32 form, not a reduced-precision one."""
    from bundle.networks import LMNet, reparameterize_model, to_channels_last

    torch.manual_seed(3)
    net = randomize_batchnorm(LMNet(), seed=4).eval()
    x = torch.randn(2, 1, 64, 80)
    with torch.no_grad():
        std = net(x).std()
        net.head.weight /= std
        net.head.bias /= std
        expected = net(x)
        got = OpenVINONetwork(to_channels_last(reparameterize_model(net)), "fp32")(x)
    assert 0.5 < float(expected.std()) < 2.0
    assert float((got - expected).abs().max()) <= 1e-4


def test_batches_run_in_power_of_two_buckets():
    assert [batch_bucket(b) for b in (1, 2, 3, 4, 5, 8, 9, 16, 17)] == [1, 2, 4, 4, 8, 8, 16, 16, 32]
    with pytest.raises(ValueError, match="at least one"):
        batch_bucket(0)


def test_openvino_model_is_cached_beside_the_weights(tmp_path, caplog):
    from bundle.networks import LMNet, reparameterize_model

    torch.manual_seed(0)
    network = reparameterize_model(LMNet().eval())
    state = tmp_path / "w.pt"
    torch.save(network.state_dict(), state)
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        expected = network(x)
    compiled = tmp_path / "openvino" / "compiled"
    with caplog.at_level(logging.INFO, logger="bundle.runtimes"):
        first = OpenVINONetwork(network, "fp32", state)(x)
        cached = sorted(p.name for p in (tmp_path / "openvino").iterdir() if p.is_file())
        blobs = sorted(compiled.iterdir())
        second_net = OpenVINONetwork(network, "fp32", state)
        second = second_net(torch.cat([x, x[:1]]))  # a batch of 3 runs as the bucket of 4, from the same model
        again = OpenVINONetwork(network, "fp32", state)(x)  # the compiled batch of 2 comes from the cache
    assert [Path(name).suffix for name in cached] == [".bin", ".xml"]
    code = network_code_digest()  # the network code is part of the name: a code change converts anew
    assert len(code) == 64 and f"{sha256_file(state)[:16]}_{code[:8]}_1x64x64_ov" in cached[1]
    assert "OpenVINO model from the cache" in caplog.text
    assert blobs and set(second_net._compiled) == {((4, 1, 64, 64), ())} and second.shape == (3, 2, 64, 64)
    assert len(list(compiled.iterdir())) == len(blobs) + 1  # the bucket of 4 added one; the batch of 2 none
    assert torch.allclose(first, expected, atol=1e-4) and torch.allclose(second[:2], expected, atol=1e-4)
    assert torch.allclose(second[2], expected[0], atol=1e-4) and torch.equal(again, first)
    with pytest.raises(ValueError, match="runs on the CPU"):
        OpenVINONetwork(network, "fp32")(x.to("meta"))


def test_extra_plugin_settings_compile_another_model_of_the_same_conversion():
    """``compiled_for(shape, plugin_config)``: per-node counters on one compiled model, none on the default one,
    both from one conversion (how ``bundle.benchmark.openvino_profile`` profiles and times the same graph)."""
    from bundle.networks import LMNet, reparameterize_model

    torch.manual_seed(0)
    net = OpenVINONetwork(reparameterize_model(LMNet().eval()), "fp32", threads=1)
    shape = (1, 1, 32, 32)
    profiled = net.compiled_for(shape, {"PERF_COUNT": "YES"}).create_infer_request()
    plain = net.compiled_for(shape).create_infer_request()
    data = torch.randn(*shape).numpy()
    profiled.infer([data])
    plain.infer([data])
    assert len(net._converted) == 1 and len(net._compiled) == 2
    assert net.compiled_for(shape, {"PERF_COUNT": "YES"}) is net.compiled_for(shape, {"PERF_COUNT": "YES"})
    assert any(node.real_time.total_seconds() > 0 for node in profiled.profiling_info)
    assert not any(node.real_time.total_seconds() > 0 for node in plain.profiling_info)
    np.testing.assert_allclose(profiled.get_output_tensor(0).data, plain.get_output_tensor(0).data, atol=1e-5)


def test_the_config_runs_openvino_as_the_segmenter_does(weights, tmp_path):
    """``monai.bundle run`` (evaluator) and ``run predict`` with runtime openvino write the labels the Segmenter gives
    with the same settings."""
    slab = _flair_slab()
    inputs = tmp_path / "in"
    inputs.mkdir()
    nib.save(nib.Nifti1Image(slab.astype(np.uint8), np.eye(4)), inputs / "case_image.nii.gz")
    values = {"runtime": "openvino", "tta_flips": [], "num_workers": 0}
    expected, _ = Segmenter.from_bundle(ROOT, "lgg", "cpu", weights, values)(slab.astype(np.uint8))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for run_id in ("run", "predict"):
        out = tmp_path / run_id
        cmd = bundle_run_command(ROOT, "lgg", "inference", {**values, "ckpt_path": str(weights),
                                 "dataset_dir": str(inputs), "output_dir": str(out)}, run_id=run_id)
        result = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
        assert "inference runtime openvino, precision fp32" in result.stdout + result.stderr, run_id
        written = sorted(out.rglob("*.nii.gz"))
        assert written, f"{run_id} wrote nothing"
        labels = np.asarray(nib.load(written[0]).dataobj)
        assert (labels.reshape(expected.shape) == expected).mean() >= 0.999, run_id


def test_agreement_script_scores_each_variant_against_fp32(synthetic_lgg, weights, tmp_path):
    import json

    from bundle.data.datalist import build_datalist, write_datalist
    from scripts import runtime_agreement

    split = write_datalist(build_datalist(synthetic_lgg, fractions=(0.5, 0.17, 0.33)), tmp_path / "split.json")
    code = runtime_agreement.main(["--task", "lgg", "--dataset-dir", str(synthetic_lgg), "--split-file", str(split),
                                   "--weights", str(weights), "--variants", "openvino fp32",
                                   "--output", str(tmp_path / "out"), "--bundle-arg", "tta_flips=[]",
                                   "--bundle-arg", "num_workers=0", "--bundle-arg", "roi_size=[64,64]"])
    variants = json.loads((tmp_path / "out" / "agreement.json").read_text())["variants"]
    assert set(variants) == {"torch fp32", "openvino fp32"}
    assert variants["torch fp32"]["voxel_agreement"] == 1.0 and variants["torch fp32"]["dice_difference"] == 0
    assert variants["openvino fp32"]["voxel_agreement"] >= 0.999 and variants["openvino fp32"]["validated"]
    assert code == 0
