"""TorchScript and ONNX export of both forms of LMNet, compared with PyTorch."""

from __future__ import annotations

import pytest
import torch

from bundle.networks import LMNet, reparameterize_model
from bundle.networks.export import export_onnx
from tests.helpers import randomize_batchnorm

SMALL = {"features": (8, 16, 16, 32, 32), "lft_heads": 2, "gft_heads": 8}


@pytest.fixture(scope="module")
def forms():
    torch.manual_seed(0)
    net = randomize_batchnorm(LMNet(in_channels=1, out_channels=2, **SMALL), seed=1).eval()
    return {"train": net, "deploy": reparameterize_model(net)}


@pytest.mark.parametrize("form", ["train", "deploy"])
def test_torchscript_round_trip(forms, form, tmp_path):
    net = forms[form]
    scripted = torch.jit.script(net)
    path = tmp_path / f"{form}.ts"
    torch.jit.save(scripted, str(path))
    loaded = torch.jit.load(str(path))
    for shape in [(1, 1, 48, 64), (2, 1, 33, 70)]:  # scripting keeps the size logic: other sizes work too
        x = torch.randn(shape)
        with torch.no_grad():
            torch.testing.assert_close(loaded(x), net(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("form", ["train", "deploy"])
def test_onnx_matches_pytorch(forms, form, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    net = forms[form]
    path = export_onnx(net, tmp_path / f"{form}.onnx", in_channels=1, spatial_size=(48, 64))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    for shape in [(1, 1, 48, 64), (3, 1, 48, 64)]:  # dynamic batch
        x = torch.randn(shape)
        with torch.no_grad():
            expected = net(x).numpy()
        got = session.run(None, {name: x.numpy()})[0]
        assert got.shape == expected.shape
        assert abs(got - expected).max() <= 1e-4
