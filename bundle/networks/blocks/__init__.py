"""Building blocks of LM-Net."""

from __future__ import annotations

from .multi_branch import MultiBranchBlock, SqueezeExcitation
from .neighborhood_attention import NeighborhoodAttention, neighborhood_attention_2d
from .pyramid import LocalPyramid, UpConv
from .reparam_conv import ConvNorm, MultiKernelDepthwiseConv, fuse_conv_bn
from .transformer import FeatureTransformer, GlobalSelfAttention, TransformerLayer

__all__ = [
    "ConvNorm",
    "FeatureTransformer",
    "GlobalSelfAttention",
    "LocalPyramid",
    "MultiBranchBlock",
    "MultiKernelDepthwiseConv",
    "NeighborhoodAttention",
    "SqueezeExcitation",
    "TransformerLayer",
    "UpConv",
    "fuse_conv_bn",
    "neighborhood_attention_2d",
]
