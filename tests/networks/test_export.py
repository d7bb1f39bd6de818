"""TorchScript and ONNX export of both forms of LMNet, 2D and 3D, compared with PyTorch."""

from __future__ import annotations

import pytest
import torch

from bundle.networks import LMNet, reparameterize_model
from bundle.networks.export import export_onnx
from tests.helpers import randomize_batchnorm

SMALL = {"features": (8, 16, 16, 32, 32), "lft_heads": 2, "gft_heads": 8}
# spatial_dims -> (sizes the scripted network runs at (scripting keeps the size logic), the ONNX trace size)
SIZES = {2: ([(48, 64), (33, 70)], (48, 64)), 3: ([(16, 32, 16), (20, 17, 33)], (16, 32, 24))}


@pytest.fixture(scope="module", params=[2, 3], ids=["2d", "3d"])
def forms(request):
    torch.manual_seed(0)
    net = randomize_batchnorm(LMNet(spatial_dims=request.param, in_channels=1, out_channels=2, **SMALL), seed=1)
    net.eval()
    return request.param, {"train": net, "deploy": reparameterize_model(net)}


@pytest.mark.parametrize("form", ["train", "deploy"])
def test_torchscript_round_trip(forms, form, tmp_path):
    dims, nets = forms
    net = nets[form]
    path = tmp_path / f"{form}.ts"
    torch.jit.save(torch.jit.script(net), str(path))
    loaded = torch.jit.load(str(path))
    for batch, size in zip((1, 2), SIZES[dims][0], strict=True):
        x = torch.randn(batch, 1, *size)
        with torch.no_grad():
            torch.testing.assert_close(loaded(x), net(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("form", ["train", "deploy"])
def test_onnx_matches_pytorch(forms, form, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    dims, nets = forms
    net = nets[form]
    size = SIZES[dims][1]
    path = export_onnx(net, tmp_path / f"{form}.onnx", in_channels=1, spatial_size=size)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    for batch in (1, 3):  # dynamic batch
        x = torch.randn(batch, 1, *size)
        with torch.no_grad():
            expected = net(x).numpy()
        got = session.run(None, {name: x.numpy()})[0]
        assert got.shape == expected.shape
        assert abs(got - expected).max() <= 1e-4
