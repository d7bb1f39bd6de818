"""The deployed 2D LM-Net on oneDNN kernels with pre-packed weights and fused activations (CPU, fp32, inference).

Eager PyTorch hands every convolution and linear layer its plain weight tensor, and oneDNN reorders that weight into
its blocked layout on every call; every activation is a separate pass over memory. :func:`fuse_for_cpu` returns a
copy of a deployed (re-parameterized) network whose convolutions and linear layers call oneDNN's inference
primitives (``torch.ops.mkldnn._convolution_pointwise`` / ``_linear_pointwise``, the kernels ``torch.compile``'s CPU
backend uses) with weights packed once per input shape, and with the activation after them fused into the kernel:

- multi-branch block: expansion conv + Hardswish, depthwise conv + GELU, squeeze-and-excitation's 1x1 convs + ReLU /
  Hardsigmoid;
- local pyramid: the fusion conv + GELU;
- transformer MLP: first linear layer + GELU;
- every other convolution and linear layer: packed, no activation (the neighborhood attention's projections stay
  the batched matrix products of its own channel-first layout).

The graph (``LMNet.forward`` and every block's ``forward``) is unchanged: a fused layer replaces the layer and an
identity its activation, so only leaf modules are swapped and the result is
the deployed network's function up to float rounding (checked by ``tests/test_onednn.py`` against the training form
to 1e-4). The copy is inference-only: eval mode, no gradients, float32 CPU tensors, 2D. Export (TorchScript, ONNX,
OpenVINO) takes the deployed network, not this copy.
"""

from __future__ import annotations

import copy
import logging

import torch
import torch.nn as nn
from monai.networks.blocks import MLPBlock

from .blocks.multi_branch import MultiBranchBlock, SqueezeExcitation
from .blocks.neighborhood_attention import NeighborhoodAttention
from .blocks.pyramid import LocalPyramid
from .blocks.reparam_conv import ConvNorm, MultiKernelDepthwiseConv
from .ensemble import ProbabilityEnsemble
from .lmnet import LMNet

__all__ = ["onednn_available", "PackedConv2d", "PackedLinear", "pack_for_cpu", "fusable", "fuse_for_cpu",
           "cpu_inference_network"]

logger = logging.getLogger(__name__)

# packed weights kept per input shape and layer: a predictor meets a handful of shapes (one per batch bucket)
_MAX_PACKED_SHAPES = 8


def onednn_available() -> bool:
    """Whether this PyTorch build has oneDNN (``torch.backends.mkldnn``) and the fused inference primitives."""
    mkldnn = torch.ops.mkldnn
    needed = ("_convolution_pointwise", "_convolution_pointwise_", "_linear_pointwise", "_reorder_convolution_weight",
              "_reorder_linear_weight")
    try:
        return torch.backends.mkldnn.is_available() and all(hasattr(mkldnn, name) for name in needed)
    except (AttributeError, RuntimeError):
        return False


def _activation(module: nn.Module | None) -> tuple[str, str | None]:
    """The oneDNN post-op (attribute, algorithm) of an activation module (``None``: no activation)."""
    if module is None or isinstance(module, nn.Identity):
        return "none", None
    if isinstance(module, nn.GELU):
        return "gelu", "tanh" if module.approximate == "tanh" else "none"
    names = {nn.ReLU: "relu", nn.Hardswish: "hardswish", nn.Hardsigmoid: "hardsigmoid"}
    for kind, name in names.items():
        if isinstance(module, kind):
            return name, None
    raise ValueError(f"no oneDNN post-op for activation {type(module).__name__}.")


def _check_input(x: torch.Tensor, layer: str) -> None:
    if x.dtype != torch.float32 or x.device.type != "cpu" or x.requires_grad:
        raise TypeError(f"{layer} runs float32 CPU inference without gradients, got a {x.dtype} tensor on "
                        f"{x.device} (requires_grad={x.requires_grad}).")


class _PackedWeights(nn.Module):
    """Holds the packed (opaque oneDNN) weights of one layer per input shape; they are never copied or pickled,
    only re-packed from the plain weight when needed, and re-packed after the plain weight changes in place (e.g.
    ``load_state_dict``: its version counter moves)."""

    weight: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        self._packed: dict[tuple[int, ...], torch.Tensor] = {}
        self._packed_version = -1

    def _packed_for(self, shape: tuple[int, ...]) -> torch.Tensor:
        version = -2 if self.weight.is_inference() else self.weight._version  # inference tensors have no counter
        if version != self._packed_version:
            self._packed.clear()
            self._packed_version = version
        packed = self._packed.get(shape)
        if packed is None:
            if len(self._packed) >= _MAX_PACKED_SHAPES:
                self._packed.pop(next(iter(self._packed)))
            packed = self._pack(shape)
            self._packed[shape] = packed
        return packed

    def _pack(self, shape: tuple[int, ...]) -> torch.Tensor:
        raise NotImplementedError

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        state["_packed"] = {}
        return state

    def train(self, mode: bool = True) -> _PackedWeights:
        if mode:
            raise RuntimeError(f"{type(self).__name__} is an inference kernel; train the original network instead.")
        return super().train(False)


class PackedConv2d(_PackedWeights):
    """A 2D convolution (+ optional activation) as one oneDNN inference primitive with pre-packed weights.

    Args:
        conv: an ``nn.Conv2d`` (zero padding); its weight and bias are shared, not copied.
        activation: the activation that follows it (``nn.GELU``, ``nn.ReLU``, ``nn.Hardswish``, ``nn.Hardsigmoid``),
            or ``None``.

    Shapes: as ``conv``: (B, in, H, W) float32 -> (B, out, H', W'), in the input's memory format.
    """

    def __init__(self, conv: nn.Conv2d, activation: nn.Module | None = None) -> None:
        super().__init__()
        if not isinstance(conv, nn.Conv2d) or conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            raise ValueError(f"PackedConv2d takes an nn.Conv2d with numeric zero padding, got {conv!r}.")
        self.weight, self.bias = conv.weight, conv.bias
        self.settings = (list(conv.padding), list(conv.stride), list(conv.dilation), conv.groups)
        self.attr, self.algorithm = _activation(activation)

    def _pack(self, shape: tuple[int, ...]) -> torch.Tensor:
        return torch.ops.mkldnn._reorder_convolution_weight(self.weight.detach(), *self.settings, list(shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_input(x, "PackedConv2d")
        weight = self._packed_for(tuple(x.shape))
        return torch.ops.mkldnn._convolution_pointwise(x, weight, self.bias, *self.settings, self.attr, [],
                                                      self.algorithm)


class PackedLinear(_PackedWeights):
    """A linear layer (+ optional activation) as one oneDNN inference primitive with a pre-packed weight.

    Args:
        linear: an ``nn.Linear``; its weight and bias are shared, not copied.
        activation: as for :class:`PackedConv2d`.

    Shapes: (..., in_features) float32 -> (..., out_features).
    """

    def __init__(self, linear: nn.Linear, activation: nn.Module | None = None) -> None:
        super().__init__()
        self.weight, self.bias = linear.weight, linear.bias
        self.attr, self.algorithm = _activation(activation)

    def _pack(self, shape: tuple[int, ...]) -> torch.Tensor:
        return torch.ops.mkldnn._reorder_linear_weight(self.weight.detach())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_input(x, "PackedLinear")
        return torch.ops.mkldnn._linear_pointwise(x, self._packed_for(()), self.bias, self.attr, [], self.algorithm)


# blocks whose (layer, activation) pairs become one kernel: the layer is replaced by its packed form with the
# activation as post-op and the activation by an identity, so each block's own ``forward`` runs unchanged
_FUSED_PAIRS: dict[type, tuple[tuple[str, str], ...]] = {
    MultiBranchBlock: (("expand", "expand_act"), ("depthwise", "depthwise_act")),
    SqueezeExcitation: (("reduce", "act"), ("expand", "gate")),
    LocalPyramid: (("fuse", "act"),),
    MLPBlock: (("linear1", "fn"),),
}


def _plain_layer(layer: nn.Module) -> nn.Module:
    """The single convolution or linear layer a deployed LM-Net layer computes (a folded conv + BN, a
    re-parameterized depthwise conv, or the layer itself)."""
    if isinstance(layer, ConvNorm):
        if layer.norm is not None:
            raise ValueError("fuse_for_cpu takes the deployed network: call reparameterize_model first.")
        return layer.conv
    if isinstance(layer, MultiKernelDepthwiseConv):
        if layer.reparam_conv is None:
            raise ValueError("fuse_for_cpu takes the deployed network: call reparameterize_model first.")
        return layer.reparam_conv
    return layer


def _packed(layer: nn.Module, activation: nn.Module | None = None) -> nn.Module:
    return PackedLinear(layer, activation) if isinstance(layer, nn.Linear) else PackedConv2d(layer, activation)


def _fuse_pairs(model: nn.Module) -> None:
    for block in list(model.modules()):
        for layer_name, act_name in _FUSED_PAIRS.get(type(block), ()):
            layer = _plain_layer(getattr(block, layer_name))
            setattr(block, layer_name, _packed(layer, getattr(block, act_name)))
            setattr(block, act_name, nn.Identity())


def _pack_the_rest(module: nn.Module) -> None:
    """Every remaining ``nn.Conv2d`` (numeric zero padding) and ``nn.Linear`` under ``module`` -> its packed form."""
    for name, child in module.named_children():
        if isinstance(child, NeighborhoodAttention):
            continue  # its projections are batched matrix products on its own layout (its module docstring)
        if (type(child) is nn.Conv2d and child.padding_mode == "zeros" and not isinstance(child.padding, str)) or (
            type(child) is nn.Linear
        ):
            setattr(module, name, _packed(child))
        else:
            _pack_the_rest(child)


def _inference_copy(model: nn.Module) -> nn.Module:
    model = copy.deepcopy(model).eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model


def pack_for_cpu(model: nn.Module) -> nn.Module:
    """A copy of any eval-mode network with each ``nn.Conv2d`` (zero padding) and ``nn.Linear`` replaced by its
    pre-packed oneDNN form (no activation fusion): the generic part of :func:`fuse_for_cpu`, e.g. to give MONAI's
    networks the same treatment in a benchmark. Same function up to float rounding; float32 CPU inference only."""
    if not onednn_available():
        raise RuntimeError("this PyTorch build has no oneDNN (torch.backends.mkldnn) inference primitives.")
    model = _inference_copy(model)
    _pack_the_rest(model)
    return model


def fusable(model: nn.Module) -> bool:
    """Whether :func:`fuse_for_cpu` applies: a 2D :class:`LMNet` with its weights on the CPU, and oneDNN here."""
    return (isinstance(model, LMNet) and model.spatial_dims == 2 and onednn_available()
            and all(p.device.type == "cpu" for p in model.parameters()))


def fuse_for_cpu(model: nn.Module) -> nn.Module:
    """A copy of the deployed 2D ``model`` (:class:`LMNet` after ``reparameterize_model``, on the CPU) on oneDNN
    kernels with pre-packed weights and fused activations (see the module docstring); ``model`` is left untouched.

    Raises:
        ValueError: ``model`` is not a deployed 2D LMNet on the CPU, or oneDNN is missing (see :func:`fusable`).
    """
    if not fusable(model):
        raise ValueError(f"fuse_for_cpu takes a 2D LMNet on the CPU with oneDNN present, got {type(model).__name__}"
                         f"{f' with spatial_dims={model.spatial_dims}' if isinstance(model, LMNet) else ''}.")
    model = _inference_copy(model)
    _fuse_pairs(model)
    _pack_the_rest(model)
    return model


def cpu_inference_network(model: nn.Module) -> nn.Module:
    """``model`` as CPU fp32 inference runs it: :func:`fuse_for_cpu` of it when :func:`fusable` and the fused copy
    reproduces ``model`` on a probe input (to 1e-4 relative to the logits' scale), else ``model`` itself (with a
    warning when the copy failed or disagreed, e.g. on a PyTorch build whose private oneDNN operators differ). A
    :class:`~bundle.networks.ensemble.ProbabilityEnsemble` becomes the ensemble of its members' forms."""
    if isinstance(model, ProbabilityEnsemble):
        return model.map_members(cpu_inference_network)
    if not fusable(model):
        return model
    probe = torch.randn(1, model.in_channels, 32, 32, generator=torch.Generator().manual_seed(0))
    try:
        fused = fuse_for_cpu(model)
        with torch.inference_mode():
            expected, got = model(probe), fused(probe)
        error = float((got - expected).abs().max())
    except (RuntimeError, TypeError, ValueError) as err:
        logger.warning("oneDNN kernels unavailable (%s); inference runs PyTorch's own modules", err)
        return model
    if not error <= 1e-4 * max(1.0, float(expected.abs().max())):
        logger.warning("oneDNN kernels disagree with PyTorch's modules on a probe input (max |difference| %.2e); "
                       "inference runs PyTorch's own modules", error)
        return model
    logger.info("inference on oneDNN kernels with pre-packed weights and fused activations (fp32)")
    return fused
