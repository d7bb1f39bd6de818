"""The deployed 2D LM-Net on oneDNN kernels with pre-packed weights and fused activations (CPU, fp32, inference).

Eager PyTorch hands every convolution and linear layer its plain weight tensor, and oneDNN reorders that weight into
its blocked layout on every call; every activation is a separate pass over memory. :func:`fuse_for_cpu` returns a
copy of a deployed (re-parameterized) network whose convolutions and linear layers call oneDNN's inference
primitives (``torch.ops.mkldnn._convolution_pointwise`` / ``_linear_pointwise``, the kernels ``torch.compile``'s CPU
backend uses) with weights packed once per input shape, and with the activation after them fused into the kernel:

- multi-branch block: expansion conv + Hardswish, depthwise conv + GELU, squeeze-and-excitation's 1x1 convs + ReLU /
  Hardsigmoid, and the pointwise conv accumulated into the shortcut conv's output (one pass instead of an add);
- local pyramid: the fusion conv + GELU;
- transformer MLP: first linear layer + GELU;
- every other convolution and linear layer: packed, no activation (the neighborhood attention's projections stay
  the batched matrix products of its own channel-first layout).

The graph (``LMNet.forward`` and the blocks' wiring) is unchanged; only leaf kernels are swapped, so the result is
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
from .lmnet import LMNet

__all__ = ["onednn_available", "PackedConv2d", "PackedLinear", "pack_for_cpu", "fuse_for_cpu"]

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

    def add_to(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``out += conv(x)`` in one pass, in place (no activation); returns ``out``."""
        _check_input(x, "PackedConv2d")
        if self.attr != "none":
            raise RuntimeError("add_to accumulates the plain convolution; this layer has an activation.")
        weight = self._packed_for(tuple(x.shape))
        return torch.ops.mkldnn._convolution_pointwise_(out, x, weight, self.bias, *self.settings, "add", None, None,
                                                       [], None)


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


class _FusedSqueezeExcitation(nn.Module):
    """:class:`SqueezeExcitation` with its 1x1 convs and their activations fused."""

    def __init__(self, se: SqueezeExcitation) -> None:
        super().__init__()
        self.pool = se.pool
        self.reduce = PackedConv2d(se.reduce, se.act)
        self.expand = PackedConv2d(se.expand, se.gate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.expand(self.reduce(self.pool(x)))


class _FusedMultiBranch(nn.Module):
    """A deployed :class:`MultiBranchBlock` on fused kernels (same wiring: expand, depthwise, SE, pointwise +
    shortcut)."""

    def __init__(self, block: MultiBranchBlock) -> None:
        super().__init__()
        depthwise = block.depthwise.reparam_conv
        if block.expand.norm is not None or depthwise is None:
            raise ValueError("fuse_for_cpu takes the deployed network: call reparameterize_model first.")
        self.expand = PackedConv2d(block.expand.conv, block.expand_act)
        self.depthwise = PackedConv2d(depthwise, block.depthwise_act)
        self.se = _FusedSqueezeExcitation(block.se)
        self.pointwise = PackedConv2d(block.pointwise)
        self.shortcut = PackedConv2d(block.shortcut)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.se(self.depthwise(self.expand(x)))
        return self.pointwise.add_to(self.shortcut(x), y)


class _FusedLocalPyramid(nn.Module):
    """A deployed :class:`LocalPyramid` with its fusion conv + GELU as one kernel."""

    def __init__(self, pyramid: LocalPyramid) -> None:
        super().__init__()
        if pyramid.fuse.norm is not None:
            raise ValueError("fuse_for_cpu takes the deployed network: call reparameterize_model first.")
        self.convs = pyramid.convs
        self.fuse = PackedConv2d(pyramid.fuse.conv, pyramid.act)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        brought: list[torch.Tensor] = []
        for i, conv in enumerate(self.convs):
            brought.append(conv(features[i]))
        return self.fuse(torch.cat(brought, dim=1))


class _FusedMLP(nn.Module):
    """MONAI's ``MLPBlock`` in eval mode (dropout off) with its first linear layer + GELU as one kernel."""

    def __init__(self, mlp: MLPBlock) -> None:
        super().__init__()
        self.linear1 = PackedLinear(mlp.linear1, mlp.fn)
        self.linear2 = PackedLinear(mlp.linear2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear2(self.linear1(x))


_FUSED_BLOCKS = {MultiBranchBlock: _FusedMultiBranch, LocalPyramid: _FusedLocalPyramid, MLPBlock: _FusedMLP}


def _replace_children(module: nn.Module, fuse_blocks: bool) -> None:
    for name, child in module.named_children():
        fused = _FUSED_BLOCKS.get(type(child)) if fuse_blocks else None
        if isinstance(child, NeighborhoodAttention):
            continue  # its projections are batched matrix products on its own layout (its module docstring)
        if fused is not None:
            replacement: nn.Module = fused(child)
        elif type(child) is nn.Conv2d and child.padding_mode == "zeros" and not isinstance(child.padding, str):
            replacement = PackedConv2d(child)
        elif type(child) is nn.Linear:
            replacement = PackedLinear(child)
        else:
            _replace_children(child, fuse_blocks)
            continue
        _replace_children(replacement, fuse_blocks)  # e.g. the pyramid's own convs
        setattr(module, name, replacement)


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
    _replace_children(model, fuse_blocks=False)
    return model


def fuse_for_cpu(model: nn.Module) -> nn.Module:
    """A copy of the deployed 2D ``model`` (:class:`LMNet` after ``reparameterize_model``) on oneDNN kernels with
    pre-packed weights and fused activations (see the module docstring); ``model`` is left untouched.

    Raises:
        ValueError: ``model`` is not a 2D LMNet in its deployed form.
        RuntimeError: this PyTorch build has no oneDNN inference primitives (see :func:`onednn_available`).
    """
    if not isinstance(model, LMNet) or model.spatial_dims != 2:
        raise ValueError(f"fuse_for_cpu takes a 2D LMNet, got {type(model).__name__}"
                         f"{'' if not isinstance(model, LMNet) else f' with spatial_dims={model.spatial_dims}'}.")
    if not onednn_available():
        raise RuntimeError("this PyTorch build has no oneDNN (torch.backends.mkldnn) inference primitives.")
    model = _inference_copy(model)
    _replace_children(model, fuse_blocks=True)
    return model
