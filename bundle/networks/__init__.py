"""Networks of the LM-Net bundle."""

from __future__ import annotations

from .ensemble import ProbabilityEnsemble, network_for_weights
from .lmnet import LMNet
from .reparam import reparameterize_model, to_channels_last

__all__ = ["LMNet", "ProbabilityEnsemble", "network_for_weights", "reparameterize_model", "to_channels_last"]
