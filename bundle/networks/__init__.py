"""Networks of the LM-Net bundle."""

from __future__ import annotations

from .lmnet import LMNet
from .reparam import reparameterize_model, to_channels_last

__all__ = ["LMNet", "reparameterize_model", "to_channels_last"]
