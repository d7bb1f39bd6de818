"""The compiled OpenVINO neighborhood-attention operation (bundle.openvino_kernels): built where a C++ compiler is,
the same function as the eager attention on every window path (interior lanes, border pixels, windows clipped to
short axes, kernel sizes 1-7), recorded in place of the attention's graph by the OpenVINO runtime, and a runtime that
falls back to OpenVINO's own operations where the operation is not wanted or cannot be built."""

from __future__ import annotations

import logging
import shutil
import sys

import pytest
import torch

from bundle import openvino_kernels
from bundle.networks.blocks.neighborhood_attention import WindowAttention2D
from tests.networks.blocks.test_neighborhood_attention import reference_attention

ov = pytest.importorskip("openvino")

OP_TYPE = openvino_kernels.OP_TYPE
COMPILER = any(shutil.which(name) for name in ("c++", "g++")) and sys.platform.startswith("linux")


@pytest.fixture
def fresh_build_state(monkeypatch, tmp_path):
    """An empty kernel cache and no remembered library: the next ``kernel_library()`` call decides anew."""
    monkeypatch.setenv("LMNET_CACHE_DIR", str(tmp_path))
    openvino_kernels.kernel_library.cache_clear()
    yield tmp_path
    openvino_kernels.kernel_library.cache_clear()


@pytest.fixture(scope="module")
def library():
    built = openvino_kernels.kernel_library()
    if built is None:
        if COMPILER:
            pytest.fail("a C++ compiler is on this machine, yet the kernel did not build (see the log)")
        pytest.skip("no C++ compiler: the runtime uses OpenVINO's own operations")
    return built


class _Attention(torch.nn.Module):
    """Stacked q/k/v (B, 3, heads, d, H, W) and their bias -> attention through a WindowAttention2D, as a traced LFT
    calls it."""

    def __init__(self, bias: torch.Tensor, kh: int, kw: int, scale: float) -> None:
        super().__init__()
        self.window_attention = WindowAttention2D()
        self.bias = bias
        self.settings = (kh, kw, scale)

    def forward(self, qkv: torch.Tensor) -> torch.Tensor:
        return self.window_attention(qkv, self.bias, *self.settings)


def _run_kernel(library, qkv: torch.Tensor, kh: int, kw: int, scale: float,
                bias: torch.Tensor | None = None) -> tuple[torch.Tensor, list[str]]:
    bias = torch.zeros(3 * qkv.shape[2] * qkv.shape[3]) if bias is None else bias
    module = _Attention(bias, kh, kw, scale).eval()
    with torch.no_grad():
        model = openvino_kernels.convert_with_kernels(module, library, example_input=qkv)
    core = ov.Core()
    core.add_extension(str(library))
    compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": 2})
    out = torch.from_numpy(compiled(qkv.numpy())[0].copy())
    return out, [op.get_type_name() for op in model.get_ops()]


CASES = [  # (B, heads, d, H, W), kernel size: the interior's 16-pixel lanes need W >= k + 16
    ((2, 2, 3, 9, 40), 3),  # lanes, the last one overlapping, and border columns
    ((1, 3, 6, 20, 19), 3),  # exactly one lane per row
    ((1, 2, 4, 12, 33), 7),
    ((1, 1, 5, 11, 30), 5),
    ((1, 1, 6, 5, 5), 5),  # the window covers the map: per-pixel path only
    ((1, 2, 2, 2, 3), 3),  # rows shorter than the window: a clipped, even window height
    ((2, 1, 4, 6, 40), 1),
]


@pytest.mark.parametrize("shape,kernel_size", CASES)
def test_the_operation_is_the_attention(library, shape, kernel_size):
    b, heads, d, h, w = shape
    gen = torch.Generator().manual_seed(sum(shape) + kernel_size)
    q, k, v = (torch.randn(b, heads, h, w, d, generator=gen) * 2 for _ in range(3))
    bias = torch.randn(3, heads, d, generator=gen)  # the projection's, added inside the operation
    qkv = torch.stack([t.permute(0, 1, 4, 2, 3) for t in (q, k, v)], 1).contiguous()
    kh, kw = min(kernel_size, h), min(kernel_size, w)
    out, ops = _run_kernel(library, qkv, kh, kw, d**-0.5, bias.flatten())
    assert ops.count(OP_TYPE) == 1
    q, k, v = (t + bias[i][None, :, None, None, :] for i, t in enumerate((q, k, v)))
    expected = reference_attention(q, k, v, kernel_size).permute(0, 1, 4, 2, 3)
    assert out.shape == expected.shape
    assert float((out - expected).abs().max()) <= 1e-5


def test_large_logits_stay_finite(library):
    """Logits far apart (a softmax that is one-hot to float precision) give the value of the winning key."""
    qkv = torch.zeros(1, 3, 1, 1, 4, 24)
    qkv[0, 0, 0, 0] = 30.0  # q
    qkv[0, 1, 0, 0] = torch.arange(24.0).repeat(4, 1)  # keys grow to the right: the rightmost window key wins
    qkv[0, 2, 0, 0] = torch.arange(24.0).repeat(4, 1)  # values: the column index
    out, _ = _run_kernel(library, qkv, 3, 3, 1.0)
    expected = (torch.clamp(torch.arange(24.0) - 1, 0, 21) + 2).repeat(4, 1)  # window start + 2 (NATTEN's shift)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out[0, 0, 0], expected, atol=1e-4, rtol=0)


def _lmnet():
    from bundle.networks import LMNet, reparameterize_model, to_channels_last

    torch.manual_seed(5)
    return to_channels_last(reparameterize_model(LMNet().eval()))


def test_the_runtime_records_the_operation_and_falls_back_without_it(library, monkeypatch, caplog):
    """The OpenVINO runtime converts each 2D LFT's attention to the operation (one per LFT); with
    ``LMNET_OPENVINO_KERNELS=0`` it converts it to OpenVINO's operations. Both equal the eager network."""
    from bundle.runtimes import OpenVINONetwork

    network = _lmnet()
    x = torch.randn(2, 1, 64, 48)
    with torch.no_grad():
        expected = network(x)
        with_kernel = OpenVINONetwork(network, "fp32")
        got = with_kernel(x)
        monkeypatch.setenv("LMNET_OPENVINO_KERNELS", "0")
        openvino_kernels.kernel_library.cache_clear()
        with caplog.at_level(logging.INFO, logger="bundle.openvino_kernels"):
            without = OpenVINONetwork(network, "fp32")
            plain = without(x)
    openvino_kernels.kernel_library.cache_clear()
    ops = [op.get_type_name() for op in with_kernel._converted[(1, 64, 48)].get_ops()]
    names = [op.get_friendly_name() for op in with_kernel._converted[(1, 64, 48)].get_ops()
             if op.get_type_name() == OP_TYPE]  # named after their LFT, so a profile counts them there
    assert sorted(names) == [f"__module.lft{i}/NeighborhoodAttention2D" for i in range(1, 5)]
    plain_ops = [op.get_type_name() for op in without._converted[(1, 64, 48)].get_ops()]
    assert ops.count(OP_TYPE) == 4 and OP_TYPE not in plain_ops
    # the converter patches the modules it replaces; the runtime converts a copy, so the network is left as it was
    assert not any("_openvino" in name for module in network.modules() for name in vars(module))
    assert "LMNET_OPENVINO_KERNELS=0" in caplog.text
    assert float((got - expected).abs().max()) <= 1e-4 and float((plain - expected).abs().max()) <= 1e-4


def test_a_failed_build_is_reported_and_the_runtime_still_runs(fresh_build_state, monkeypatch, caplog):
    from bundle.networks.blocks.transformer import FeatureTransformer
    from bundle.runtimes import OpenVINONetwork

    monkeypatch.setenv("CXX", shutil.which("false") or "/bin/false")
    torch.manual_seed(6)
    network = FeatureTransformer(2, 12, 12, 2, kernel_size=3).eval()  # one LFT: a network that holds the attention
    x = torch.randn(1, 12, 24, 20)
    with caplog.at_level(logging.WARNING, logger="bundle.openvino_kernels"):
        runtime = OpenVINONetwork(network, "fp32")
        with torch.no_grad():
            got, expected = runtime(x), network(x)
    assert runtime._kernels is None and "failed" in caplog.text
    assert not list(fresh_build_state.rglob("*.so"))
    assert float((got - expected).abs().max()) <= 1e-4


@pytest.mark.skipif(not COMPILER, reason="no C++ compiler")
def test_the_library_is_built_once_and_reused(fresh_build_state, caplog):
    with caplog.at_level(logging.INFO, logger="bundle.openvino_kernels"):
        first = openvino_kernels.kernel_library()
    assert first is not None and first.is_file() and fresh_build_state in first.parents
    assert "building the compiled OpenVINO operation" in caplog.text
    openvino_kernels.kernel_library.cache_clear()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="bundle.openvino_kernels"):
        second = openvino_kernels.kernel_library()
    assert second == first and "building" not in caplog.text
    assert [p.name for p in first.parent.iterdir()] == [first.name]  # no build leftovers beside it
