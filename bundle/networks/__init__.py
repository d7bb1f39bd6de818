"""Networks of the LM-Net bundle."""

from __future__ import annotations

from .ensemble import ProbabilityEnsemble, ensemble_of, lmnet_ensemble, members_in_file, network_for_weights, one_member
from .lmnet import LMNet
from .reparam import reparameterize_model, to_channels_last

__all__ = [
    "LMNet",
    "ProbabilityEnsemble",
    "ensemble_of",
    "lmnet_ensemble",
    "members_in_file",
    "network_for_weights",
    "one_member",
    "reparameterize_model",
    "to_channels_last",
]
